"""Reports built from call records."""
