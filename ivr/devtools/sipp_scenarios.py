"""SIPp scenarios (XML) for the demo, the tests and the benchmarks: the caller (``CallerScript``: dial,
keys, wait or hang up), the agent phone, the registrar, a registering phone, a phone that dials, and the
customers' phones behind the loopback carrier (``callee_scenario``)."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


from .sipp_media import PCAP_SEQ, RtpClock, write_audio_prelude, write_dtmf_pcap, write_ulaw_pcap


SDP = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
"""
# the 200 OK a SIPp scenario sends to the request it just received (a BYE, a CANCEL)
OK_LAST = """SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

"""


@dataclass
class CallerScript:
    """What one simulated caller does after the call is answered."""

    steps: Sequence[tuple[str, str | int]] = ()   # ("pause", ms) | ("dtmf", "123#") | ("speech", .ulaw file)
    end: str = "wait_bye"                          # "wait_bye" (far end hangs up) | "hangup"
    wait_bye_ms: int = 120_000                     # how long to wait for the far end's BYE
    patience_ms: int = 0                           # with wait_bye: hang up after this long instead of failing
    prelude_ms: int = 60                           # audio the phone sends as the call is answered (0: none)
    via_proxy: bool = False                        # behind a proxy (Kamailio): follow its Record-Route in ACK/BYE

    def xml(self, pcap_dir: Path | None = None) -> str:
        """The scenario; DTMF pcaps are written into ``pcap_dir`` (a temporary folder by default)."""
        body = []
        clock = RtpClock()
        pcap_dir = Path(pcap_dir or tempfile.mkdtemp(prefix="sipp-dtmf-"))
        pcap_dir.mkdir(parents=True, exist_ok=True)
        if self.prelude_ms:
            pcap = pcap_dir / f"prelude-{os.getpid()}-{next(PCAP_SEQ)}.pcap"
            write_audio_prelude(pcap, clock, self.prelude_ms)
            body.append(f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
            body.append(f'  <pause milliseconds="{int(self.prelude_ms)}"/>')
        for n, (kind, value) in enumerate(self.steps):
            if kind == "pause":
                body.append(f'  <pause milliseconds="{int(value)}"/>')
            elif kind == "dtmf":
                digits = str(value)
                # a fresh name per scenario: a SIPp already running may still be reading an earlier one
                pcap = pcap_dir / f"dtmf-{os.getpid()}-{next(PCAP_SEQ)}-{n}.pcap"
                write_dtmf_pcap(pcap, digits, clock)
                body.append(f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
                body.append(f'  <pause milliseconds="{len(digits) * 240 + 150}"/>')
            elif kind == "speech":  # the caller talks: raw 8 kHz mu-law (e.g. a built prompt's .ulaw)
                pcap = pcap_dir / f"speech-{os.getpid()}-{next(PCAP_SEQ)}-{n}.pcap"
                seconds = write_ulaw_pcap(pcap, Path(str(value)).read_bytes())
                body.append(f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
                body.append(f'  <pause milliseconds="{int(seconds * 1000) + 100}"/>')
            else:
                raise ValueError(f"unknown caller step {kind!r}")
        # in-dialog requests: to the far end's Contact through the proxies that recorded their route, or
        # straight to the server dialled
        in_dialog = "[next_url] SIP/2.0\n[routes]" if self.via_proxy else "sip:[service]@[remote_ip]:[remote_port] SIP/2.0"
        bye = """  <send retrans="500"><![CDATA[
BYE """ + in_dialog + """
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
[last_Call-ID:]
CSeq: 2 BYE
Contact: <sip:[caller]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
"""
        if self.end == "hangup":
            tail = bye
        elif self.end == "wait_bye":
            on_timeout = ' ontimeout="give_up"' if self.patience_ms else ""
            limit = self.patience_ms or self.wait_bye_ms
            tail = f"""  <recv request="BYE" timeout="{int(limit)}"{on_timeout}/>
  <send next="done"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[caller]@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
  <label id="give_up"/>
""" + (bye if self.patience_ms else "") + """  <label id="done"/>
"""
        else:
            raise ValueError(f"unknown caller end {self.end!r}")
        return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ivr caller">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:[caller]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{SDP}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"{' rrs="true"' if self.via_proxy else ''}/>
  <send><![CDATA[
ACK {in_dialog}
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
[last_Call-ID:]
CSeq: 1 ACK
Contact: <sip:[caller]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
{chr(10).join(body)}
{tail}
  <ResponseTimeRepartition value="100, 500, 1000, 5000"/>
</scenario>
"""


def uas_hangup(user: str, via_proxy: bool = False) -> str:
    """The end shared by the UAS scenarios: label ``hangup`` sends our BYE, label ``done`` ends. ``via_proxy``:
    the BYE follows the Route set the INVITE recorded (its ``recv`` needs ``rrs="true"``)."""
    target = "[next_url] SIP/2.0\n[routes]" if via_proxy else "[$remote_contact] SIP/2.0"
    return f"""  <label id="hangup"/>
  <send retrans="500"><![CDATA[
BYE {target}
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To:[$remote_from]
[last_Call-ID:]
CSeq: 2 BYE
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
  <label id="done"/>"""


def uas_answer(user: str, sdp: str = SDP, via_proxy: bool = False) -> str:
    """A phone's 200 OK with its SDP (re-sent until the ACK), and the ACK. ``via_proxy``: the INVITE's
    Record-Route is copied into the answer, so the caller's ACK and BYE come through the proxy."""
    rr = "[last_Record-Route:]\n" if via_proxy else ""
    return f"""  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
{rr}[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{user}@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
  <recv request="ACK" crlf="true"/>
"""


def uas_ring_and_answer(user: str, ring_ms: int, extra_headers: str = "", via_proxy: bool = False) -> str:
    """A phone taking the INVITE just received: 180 Ringing (with ``extra_headers``, one per line), ``ring_ms``
    of ringing, then ``uas_answer``."""
    return f"""  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{user}@[local_ip]:[local_port]>
{extra_headers}Content-Length: 0

]]></send>
  <pause milliseconds="{int(ring_ms)}"/>
{uas_answer(user, via_proxy=via_proxy)}"""


def agent_scenario(talk_ms: int = 3000, ring_ms: int = 100, audio_pcap: Path | None = None,
                   via_proxy: bool = False) -> str:
    """UAS for an agent phone: answer after ``ring_ms``, talk ``talk_ms``, hang up (or take the caller's BYE).
    With ``audio_pcap`` the phone sends that audio from the answer, as a real phone sends RTP all through a
    call (Asterisk features that act on the call's frames, such as ChanSpy, need a stream to act on). With
    ``via_proxy`` the phone sits behind a SIP proxy (Kamailio) and keeps it in the dialog's route."""
    media = f'  <nop><action><exec play_pcap_audio="{audio_pcap}"/></action></nop>\n' if audio_pcap else ""
    # where our BYE goes: the caller's Contact, or (behind a proxy) the recorded route, which needs no variable
    contact = "" if via_proxy else \
        '      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" check_it="true" assign_to="remote_contact"/>\n'
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent phone">
  <recv request="INVITE" crlf="true"{' rrs="true"' if via_proxy else ''}>
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="remote_from"/>
{contact}    </action>
  </recv>
{uas_ring_and_answer('agent', ring_ms, via_proxy=via_proxy)}{media}  <recv request="BYE" timeout="{int(talk_ms)}" ontimeout="hangup"/>
  <send next="done"><![CDATA[
{OK_LAST}]]></send>
{uas_hangup('agent', via_proxy)}
</scenario>
"""


CALLEE_BEHAVIOURS = {
    "0": "key 1", "1": "key 1", "2": "key 1", "3": "key 1", "4": "key 2", "5": "key 9",
    "6": "busy", "7": "no answer", "8": "machine greeting", "9": "answer, no key",
}


def registrar_scenario(user: str, password: str) -> str:
    """A carrier's registrar: challenge one REGISTER, check the digest (SIPp verifyauth); 200 if right,
    403 and a failed call if wrong."""
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", user) or not re.fullmatch(r"[A-Za-z0-9_.~+=@%^!#*-]+", password):
        raise ValueError("registrar: plain user and password only")
    reply = """  <send{extra}><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
{headers}Content-Length: 0

]]></send>
"""
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<scenario name="registrar">\n'
            '  <recv request="REGISTER"/>\n'
            + reply.format(extra="", status="401 Unauthorized",
                           headers='WWW-Authenticate: Digest realm="carrier.test", nonce="[pid]n[call_number]", '
                                   'algorithm=MD5\n')
            + f'  <recv request="REGISTER">\n    <action>\n'
              f'      <verifyauth assign_to="authvalid" username="{user}" password="{password}"/>\n'
              f'    </action>\n  </recv>\n'
            + '  <nop hide="true" test="authvalid" next="good"/>\n'
            + reply.format(extra=' next="bad"', status="403 Forbidden", headers="")
            + '  <label id="good"/>\n'
            + reply.format(extra=' next="done"', status="200 OK", headers="Contact: [last_Contact:];expires=600\n"
                           .replace("Contact: [last_Contact:]", "[last_Contact:]"))
            + '  <label id="bad"/>\n  <recv request="NEVER" timeout="200"/>\n  <label id="done"/>\n</scenario>\n')


def dial_as_scenario(hold_ms: int = 30_000, after_answer: str = "", via_proxy: bool = False) -> str:
    """UAC: INVITE, answer the 401 digest challenge, wait for Asterisk's BYE (``hold_ms`` at most).
    ``via_proxy``: the ACK of the answer follows the proxy's Record-Route."""
    def invite(cseq: int, auth: str) -> str:
        return f"""  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[user]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:[user]@[local_ip]:[local_port]>
{auth}Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{SDP}
]]></send>
"""

    target = "[next_url] SIP/2.0\n[routes]" if via_proxy else "sip:[service]@[remote_ip]:[remote_port] SIP/2.0"

    def ack(cseq: int) -> str:
        return f"""  <send><![CDATA[
ACK {target}
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[user]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
"""
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<scenario name="agent dials">\n'
            + invite(1, "") + '  <recv response="100" optional="true"/>\n  <recv response="401" auth="true"/>\n'
            + """  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
""" + invite(2, "[authentication]\n")
            + '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n'
            + '  <recv response="183" optional="true"/>\n  <recv response="200" rtd="true"'
            + (' rrs="true"' if via_proxy else '') + '/>\n' + ack(2)
            + after_answer + f'  <recv request="BYE" timeout="{int(hold_ms)}"/>\n'
            + "  <send><![CDATA[\n" + OK_LAST + "]]></send>\n</scenario>\n")


def register_scenario(expires: int = 300, stay_ms: int = 0) -> str:
    """REGISTER, answer the digest challenge, expect 200 (anything else fails the run)."""
    def register(cseq: int, auth: str) -> str:
        return f"""  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[service]@[remote_ip]>;tag=[call_number]
To: <sip:[service]@[remote_ip]>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <sip:[service]@[local_ip]:[local_port]>
{auth}Max-Forwards: 70
Expires: {expires}
User-Agent: sipp-agent
Content-Length: 0

]]></send>
"""
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<scenario name="register">\n'
            + register(1, "") + '  <recv response="401" auth="true"/>\n'
            + register(2, "[authentication]\n") + '  <recv response="200"/>\n'
            + (f'  <pause milliseconds="{stay_ms}"/>\n' if stay_ms else "") + '</scenario>\n')


def callee_scenario(pcap_dir: Path, talk_ms: int = 20_000, key_after_ms: int = 1500) -> str:
    """UAS for customers' phones behind the test trunk; the number's last digit picks the behaviour.

    0-3 answer and press 1, 4 press 2, 5 press 9, 6 busy (486), 7 ring until cancelled,
    8 answer with a 7-second greeting (a machine for AMD), 9 answer and press nothing.
    """
    pcap_dir.mkdir(parents=True, exist_ok=True)
    for digit in "129":
        write_dtmf_pcap(pcap_dir / f"callee-{digit}.pcap", digit, RtpClock())
    sdp = SDP.replace("RTP/AVP 0 101", "RTP/AVP 0 8 101").replace(
        "a=rtpmap:101", "a=rtpmap:8 PCMA/8000\na=rtpmap:101")

    def answer(label: str, media: str) -> str:
        return f"""  <label id="{label}"/>
{uas_answer("callee", sdp)}{media}
  <recv request="BYE" timeout="{int(talk_ms)}" ontimeout="hangup"/>
  <send next="done"><![CDATA[
{OK_LAST}]]></send>
"""

    def key(k: str) -> str:
        return (f'  <pause milliseconds="{int(key_after_ms)}"/>\n'
                f'  <nop><action><exec play_pcap_audio="{pcap_dir / f"callee-{k}.pcap"}"/></action></nop>')

    machine = '  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/g711a.pcap"/></action></nop>'
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="customer phones">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="INVITE sip:[0-9]*([0-9])@" search_in="msg" check_it="true" assign_to="whole,last"/>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="remote_from"/>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" check_it="true" assign_to="remote_contact"/>
      <todouble assign_to="d" variable="last"/>
      <test assign_to="busy" variable="d" compare="equal" value="6"/>
      <test assign_to="noans" variable="d" compare="equal" value="7"/>
      <test assign_to="mach" variable="d" compare="equal" value="8"/>
      <test assign_to="silent" variable="d" compare="equal" value="9"/>
      <test assign_to="k2" variable="d" compare="equal" value="4"/>
      <test assign_to="k9" variable="d" compare="equal" value="5"/>
    </action>
  </recv>
  <nop next="busy" test="busy"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:callee@[local_ip]:[local_port]>
X-Matched: [$whole]
Content-Length: 0

]]></send>
  <nop next="ring" test="noans"/>
  <pause milliseconds="300"/>
  <nop next="a_mach" test="mach"/>
  <nop next="a_silent" test="silent"/>
  <nop next="a_k2" test="k2"/>
  <nop next="a_k9" test="k9"/>
{answer("a_k1", key("1")).replace('ontimeout="hangup"', 'ontimeout="hangup"')}
{answer("a_k2", key("2"))}
{answer("a_k9", key("9"))}
{answer("a_mach", machine)}
{answer("a_silent", "")}
  <label id="busy"/>
  <send next="end_busy"><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="ring"/>
  <recv request="CANCEL" timeout="120000"/>
  <send><![CDATA[
{OK_LAST}]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [cseq] INVITE
Content-Length: 0

]]></send>
  <recv request="ACK" next="done"/>
  <label id="end_busy"/>
  <recv request="ACK" next="done"/>
{uas_hangup('callee')}
</scenario>
"""
