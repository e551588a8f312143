"""Contact row validation (pure, no Redis): numbers to E.164, destinations, hostile values, lang and tz."""

from __future__ import annotations

import io

import pytest

import phonenumbers

from ivr.campaigns.contacts import progress_bar
from ivr.campaigns.contacts_parse import Contact, RowError, open_lines, read_rows, validate_row


def ok(row: dict[str, str], **kw: object) -> Contact:
    result = validate_row(row, 7, **kw)  # type: ignore[arg-type]
    assert isinstance(result, Contact), result
    assert result.line == 7
    return result


def bad(row: dict[str, str], **kw: object) -> str:
    result = validate_row(row, 9, **kw)  # type: ignore[arg-type]
    assert isinstance(result, RowError), result
    assert result.line == 9
    return result.reason


@pytest.mark.parametrize("raw, region, e164, tz", [
    ("(212) 555-0123", "US", "+12125550123", "America/New_York"),
    ("+1 415 207 9999", "GB", "+14152079999", "America/Los_Angeles"),
    ("020 7946 0958", "GB", "+442079460958", "Europe/London"),
    ("+44 20 7946 0958", "US", "+442079460958", "Europe/London"),
    ("0912 123 4567", "IR", "+989121234567", "Asia/Tehran"),
    ("+98 21 1234 5678", "US", "+982112345678", "Asia/Tehran"),
    ("138 1234 5678", "CN", "+8613812345678", "Asia/Shanghai"),
    ("+86 10 6552 9988", "US", "+861065529988", "Asia/Shanghai"),
])
def test_numbers_are_normalised_to_e164_and_tz_derived(raw: str, region: str, e164: str, tz: str) -> None:
    c = ok({"number": raw}, default_region=region)
    assert (c.number, c.tz, c.lang) == (e164, tz, "en")


def test_phone_column_aliases_are_case_insensitive() -> None:
    assert ok({"Phone": "+12125550123"}).number == "+12125550123"
    assert ok({"MSISDN": "+12125550123", "TimeZone": "Asia/Tehran"}).tz == "Asia/Tehran"


@pytest.mark.parametrize("raw, why", [
    ("", "empty"), ("   ", "empty"), ("hello", "not a phone number"), ("12345", "not a valid number"),
    ("+1 212 555", "not a valid number"), ("+44 20 7946 095", "not a valid number"),
    ("0912 123 4567", "not a valid number"),   # an Iranian mobile read as a US number
])
def test_invalid_numbers_are_rejected(raw: str, why: str) -> None:
    reason = bad({"Phone": raw, "name": "x"})
    assert reason.startswith("Phone: ") and why in reason, reason


def test_error_keeps_the_raw_number() -> None:
    result = validate_row({"number": "12345"}, 3)
    assert isinstance(result, RowError) and result.number == "12345"


def test_premium_rate_numbers_are_rejected() -> None:
    assert "premium-rate" in bad({"number": "+1 900 555 0123"})


def test_allowed_prefixes_are_the_toll_fraud_guard() -> None:
    assert bad({"number": "+33 1 42 68 53 00"}, allowed_prefixes=("+44", "+98")) == "destination +33 not allowed"
    assert bad({"number": "(212) 555-0123"}, allowed_prefixes=("+44",)) == "destination +1 not allowed"
    assert ok({"number": "+44 20 7946 0958"}, allowed_prefixes=("+44", "+98")).number == "+442079460958"
    assert ok({"number": "0912 123 4567"}, default_region="IR", allowed_prefixes=("+98912",)).number == "+989121234567"
    assert bad({"number": "+98 21 1234 5678"}, allowed_prefixes=("+98912",)) == "destination +98 not allowed"
    assert ok({"number": "+33 1 42 68 53 00"}, allowed_prefixes=()).number == "+33142685300"


@pytest.mark.parametrize("value, why", [
    ("Ann\rSmith", "contains a line break"), ("Ann\nSmith", "contains a line break"),
    ("Ann\r\nSmith", "contains a line break"), ("Ann\x00", "contains a NUL character"),
    ("${EXEC(System(rm -rf /))}", "contains '${'"), ("x$[1+1]", "contains '$['"),
    ("a" * 201, "longer than 200 characters"), ("caf\ufffd", "is not valid UTF-8"),
])
@pytest.mark.parametrize("column", ["Name", "booking", "LANG", "tz", "flight"])
def test_hostile_values_are_rejected_naming_the_column(column: str, value: str, why: str) -> None:
    row = {"number": "+12125550123", column: value}
    assert bad(row, keep_columns=("flight",)) == f"{column}: {why}"


def test_hostile_number_column_is_named_too() -> None:
    assert bad({"msisdn": "+1212${X}"}) == "msisdn: contains '${'"
    assert bad({"msisdn": "+1212\n5550123"}) == "msisdn: contains a line break"


def test_values_of_200_characters_pass_and_unused_columns_are_not_checked() -> None:
    c = ok({"number": "+12125550123", "name": "a" * 200, "notes": "line one\nline two ${X}"})
    assert c.name == "a" * 200


def test_names_are_kept_but_stripped_of_control_characters() -> None:
    assert ok({"number": "+12125550123", "name": "  Ann\x07 \x1b[31mSmith\x7f\x85 "}).name == "Ann [31mSmith"
    persian = "می\u200cخواهم"   # the zero-width non-joiner is part of Persian spelling: kept
    assert ok({"number": "+989121234567", "name": persian}).name == persian
    assert ok({"number": "+8613812345678", "name": "王小明"}).name == "王小明"


def test_extra_columns_are_kept_sanitised() -> None:
    c = ok({"number": "+12125550123", "Flight": " BA\x0b117 ", "Seat": "12A"}, keep_columns=("flight",))
    assert c.extra == {"flight": "BA117"}
    assert ok({"number": "+12125550123"}, keep_columns=("flight",)).extra == {"flight": ""}


def test_lang_is_checked_and_defaults_to_the_campaign() -> None:
    assert ok({"number": "+12125550123", "lang": "FA"}).lang == "fa"
    assert ok({"number": "+12125550123", "lang": " zh "}).lang == "zh"
    assert ok({"number": "+12125550123", "lang": ""}, default_lang="fa").lang == "fa"
    assert ok({"number": "+12125550123"}, default_lang="zh").lang == "zh"
    assert bad({"number": "+12125550123", "Lang": "de"}) == "Lang: 'de' is not one of en, fa, zh"


def test_tz_must_be_an_iana_zone_else_it_comes_from_the_number() -> None:
    assert ok({"number": "+12125550123", "tz": "Europe/London"}).tz == "Europe/London"
    assert ok({"number": "+12125550123", "timezone": "asia/tehran"}).tz == "Asia/Tehran"   # canonical spelling
    assert bad({"number": "+12125550123", "tz": "Mars/Phobos"}) == "tz: unknown time zone 'Mars/Phobos'"
    assert bad({"number": "+12125550123", "TimeZone": "EST5EDT x"}).startswith("TimeZone: unknown time zone")
    assert ok({"number": "+12125550123", "tz": ""}).tz == "America/New_York"
    assert ok({"number": "+1 312 201 0000"}).tz == "America/Chicago"
    assert ok({"number": "+800 1234 5678"}).tz == "Etc/UTC"       # international freephone: no zone known


def rows_of(text: str) -> list[tuple[int, list[str] | None, str]]:
    return list(read_rows(io.StringIO(text, newline="")))


def test_rows_carry_the_line_they_start_on() -> None:
    text = 'number,name\n+1,"two\nlines"\n\n+2,x\n,,\n+3,"a\r\nb\r\nc"\n+4,y\n'
    assert [(line, f) for line, f, _ in rows_of(text)] == [
        (1, ["number", "name"]), (2, ["+1", "two\nlines"]), (5, ["+2", "x"]), (7, ["+3", "a\r\nb\r\nc"]),
        (10, ["+4", "y"])]


def test_binary_input_counts_bytes_and_drops_the_bom() -> None:
    data = "\ufeffnumber,name\n+1,Zoë\n".encode()
    lines, bytes_read, owned = open_lines(io.BytesIO(data))
    assert [f for _, f, _ in read_rows(lines)] == [["number", "name"], ["+1", "Zoë"]]
    assert bytes_read() == len(data) and owned is None


def test_undecodable_bytes_reject_the_row_not_the_file() -> None:
    lines, _, _ = open_lines(io.BytesIO(b"number,name\n+12125550123,Jos\xe9\n"))
    (_, header, _), (line, fields, _) = read_rows(lines)
    assert bad(dict(zip(header, fields))) == "name: is not valid UTF-8"


def test_validity_is_exactly_is_valid_number() -> None:
    """validate_row checks number_type != UNKNOWN (3x cheaper); it must agree with is_valid_number."""
    import random
    rnd = random.Random(7)
    samples = ["+12125550123", "+19005550123", "+18005550123", "+800 1234 5678", "+882 1234 567890",
               "+447700900123", "+442079460958", "+989121234567", "+8613812345678", "+3906 6982 0000"]
    for cc, length in (("1", 10), ("44", 10), ("98", 10), ("86", 11), ("33", 9), ("7", 10), ("39", 10)):
        samples += ["+" + cc + "".join(rnd.choice("0123456789") for _ in range(length)) for _ in range(300)]
    for raw in samples:
        num = phonenumbers.parse(raw, "US")
        expected = phonenumbers.is_valid_number(num)
        got = not isinstance(validate_row({"number": raw}, 1), RowError) or \
            "not a valid number" not in validate_row({"number": raw}, 1).reason  # type: ignore[union-attr]
        assert got == expected, raw


def test_progress_bar_prints_a_line_per_ten_percent_when_not_a_tty() -> None:
    out = io.StringIO()
    bar = progress_bar(1000, stream=out)
    for done in range(0, 1001, 50):
        bar(done, done)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and "100%" in lines[-1] and "1,000 rows" in lines[-1]


def test_numbers_spanning_several_zones_are_marked_for_every_zone() -> None:
    from ivr.campaigns.contacts_parse import MULTI_ZONE, number_zones
    assert ok({"number": "+79161234567"}).tz == MULTI_ZONE          # a Russian mobile: Kaliningrad to Kamchatka
    assert ok({"number": "+79161234567", "tz": "Europe/Moscow"}).tz == "Europe/Moscow"   # a tz column wins
    zones = number_zones("+79161234567")
    assert "Europe/Moscow" in zones and "Asia/Kamchatka" in zones and "Etc/Unknown" not in zones
    assert number_zones("+15555550100") == ("Etc/UTC",)


def test_multi_zone_contacts_are_called_only_when_the_window_holds_in_every_zone() -> None:
    import datetime
    from zoneinfo import ZoneInfo

    from ivr.campaigns.model import parse_campaign
    c = parse_campaign({"id": "w", "message": {"en": "notice-cancelled"}, "window": {"start": "09:00", "end": "20:00"}})
    moscow, kamchatka = ZoneInfo("Europe/Moscow"), ZoneInfo("Asia/Kamchatka")   # UTC+3 and UTC+12
    at = datetime.datetime(2026, 11, 25, 7, 0, tzinfo=datetime.timezone.utc)   # 10:00 Moscow, 19:00 Kamchatka
    assert c.in_window_everywhere(at, [moscow, kamchatka])
    later = at + datetime.timedelta(hours=2)                                     # 12:00 Moscow, 21:00 Kamchatka
    assert c.in_window(later.astimezone(moscow)) and not c.in_window_everywhere(later, [moscow, kamchatka])
    nxt = c.next_common_start(later, [moscow, kamchatka])
    assert nxt is not None and nxt.astimezone(moscow).hour == 9 and c.in_window_everywhere(nxt, [moscow, kamchatka])
    # zones too far apart for the window: no time works, the dialler closes the contact instead of guessing
    london = ZoneInfo("Europe/London")                                          # 12 h from Kamchatka
    assert c.next_common_start(later, [london, kamchatka]) is None


# ------------------------------------------------------- column names from real systems
def test_common_column_names_are_read_and_the_report_says_which_is_which() -> None:
    from ivr.campaigns.contacts_parse import resolve_columns
    header = ["MSISDN", "Full_Name", "Language", "Time_Zone", "Booking_Ref"]
    row = dict(zip(header, ["+1 212 555 0123", "Alice", "fa", "America/New_York", "PNR42"]))
    c = validate_row(row, 2)
    assert isinstance(c, Contact)
    assert (c.number, c.name, c.lang, c.tz, c.booking) == ("+12125550123", "Alice", "fa", "America/New_York", "PNR42")
    assert resolve_columns(header, {}) == {"number": "MSISDN", "name": "Full_Name", "lang": "Language",
                                           "tz": "Time_Zone", "booking": "Booking_Ref"}


def test_a_columns_mapping_names_what_the_aliases_do_not_know() -> None:
    from ivr.campaigns.contacts_parse import parse_mapping, resolve_columns
    mapping = parse_mapping("number=Telefon, lang:Sprache")
    assert mapping == {"number": "Telefon", "lang": "Sprache"}
    header = ["Telefon", "Sprache", "phone"]          # the mapping wins over an alias column
    c = validate_row(dict(zip(header, ["+44 20 7946 0958", "zh", "+1 212 555 0123"])), 2,
                     columns=tuple(sorted(mapping.items())))
    assert isinstance(c, Contact) and (c.number, c.lang) == ("+442079460958", "zh")
    assert resolve_columns(header, mapping)["number"] == "Telefon"


@pytest.mark.parametrize("text, says", [
    ("phone", "is not field=column"), ("mobile=Tel", "'mobile' is not a field"), ("number=A,number=B", "named twice"),
    ("number=${EXEC(x)}", "not a column name")])
def test_a_bad_columns_mapping_is_refused_naming_what_is_wrong(text: str, says: str) -> None:
    from ivr.campaigns.contacts_parse import ContactsError, parse_mapping
    with pytest.raises(ContactsError, match=says.replace("$", r"\$").replace("(", r"\(")):
        parse_mapping(text)


def test_a_mapping_to_a_column_the_file_does_not_have_is_refused() -> None:
    from ivr.campaigns.contacts_parse import ContactsError, resolve_columns
    with pytest.raises(ContactsError, match="no single column 'Tel'"):
        resolve_columns(["number", "name"], {"number": "Tel"})


def test_the_lang_column_is_checked_against_the_languages_given() -> None:
    row = {"number": "+1 212 555 0123", "lang": "de"}
    assert isinstance(validate_row(row, 2, languages=("en", "de")), Contact)
    bad = validate_row({**row, "lang": "fa"}, 3, languages=("en", "de"))
    assert isinstance(bad, RowError) and bad.reason == "lang: 'fa' is not one of en, de"
