"""Sans-IO building blocks: AGI and AMI wire formats, AMI event names, CSV safety; no I/O."""
