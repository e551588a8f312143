"""Names of the AMI actions, events and header fields the controller uses, in one place.

All of them exist with the same meaning from Asterisk 16 to 22.
"""

from __future__ import annotations

# Actions
LOGIN = "Login"
PING = "Ping"
QUEUE_STATUS = "QueueStatus"
QUEUE_SUMMARY = "QueueSummary"
QUEUE_ADD = "QueueAdd"
QUEUE_REMOVE = "QueueRemove"
QUEUE_PAUSE = "QueuePause"
QUEUE_PENALTY = "QueuePenalty"
CORE_SHOW_CHANNELS = "CoreShowChannels"
ORIGINATE = "Originate"
SETVAR = "Setvar"
GETVAR = "Getvar"
REDIRECT = "Redirect"
HANGUP_ACTION = "Hangup"
DEVICE_STATE_LIST = "DeviceStateList"

# Events: queue
QUEUE_PARAMS = "QueueParams"
QUEUE_MEMBER = "QueueMember"
QUEUE_ENTRY = "QueueEntry"
QUEUE_STATUS_COMPLETE = "QueueStatusComplete"
QUEUE_CALLER_JOIN = "QueueCallerJoin"
QUEUE_CALLER_LEAVE = "QueueCallerLeave"
QUEUE_CALLER_ABANDON = "QueueCallerAbandon"
QUEUE_MEMBER_ADDED = "QueueMemberAdded"
QUEUE_MEMBER_REMOVED = "QueueMemberRemoved"
QUEUE_MEMBER_PAUSE = "QueueMemberPause"
QUEUE_MEMBER_PENALTY = "QueueMemberPenalty"
QUEUE_MEMBER_STATUS = "QueueMemberStatus"
QUEUE_MEMBER_RINGINUSE = "QueueMemberRinginuse"
AGENT_CALLED = "AgentCalled"
AGENT_CONNECT = "AgentConnect"
AGENT_COMPLETE = "AgentComplete"
AGENT_RING_NO_ANSWER = "AgentRingNoAnswer"
AGENT_DUMP = "AgentDump"

# Events: channels
NEWCHANNEL = "Newchannel"
HANGUP = "Hangup"
CORE_SHOW_CHANNEL = "CoreShowChannel"
CORE_SHOW_CHANNELS_COMPLETE = "CoreShowChannelsComplete"
ORIGINATE_RESPONSE = "OriginateResponse"
CHANSPY_START = "ChanSpyStart"
CHANSPY_STOP = "ChanSpyStop"
FULLY_BOOTED = "FullyBooted"
SHUTDOWN = "Shutdown"
USER_EVENT = "UserEvent"
DEVICE_STATE_CHANGE = "DeviceStateChange"

# QueuePause Reason of a member held paused because the agent is on a call on another node of a cluster:
# "busy@<node>" (ivr/cluster/agents.py). Kept for that use: a supervisor's pause reason may not start with it.
PAUSED_ELSEWHERE = "busy@"

# Device states as reported in QueueMember Status (enum ast_device_state)
DEVICE_UNKNOWN = 0
DEVICE_NOT_INUSE = 1
DEVICE_INUSE = 2
DEVICE_BUSY = 3
DEVICE_INVALID = 4
DEVICE_UNAVAILABLE = 5
DEVICE_RINGING = 6
DEVICE_RINGINUSE = 7
DEVICE_ONHOLD = 8
DEVICE_STATE_NAMES = {
    0: "unknown", 1: "idle", 2: "in-use", 3: "busy", 4: "invalid",
    5: "unavailable", 6: "ringing", 7: "ring-in-use", 8: "on-hold",
}
