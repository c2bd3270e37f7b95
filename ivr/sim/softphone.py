"""A softphone in the terminal: hear the prompts as text (or speech), key digits, stay silent."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from ivr.sim.phone import Agent, CallFailed, Phone

HELP = "keys 0-9 * # then Enter; an empty line is silence; 'hangup' ends the call"
QUEUE_HELP = ("queued: Enter waits for the next announcement, 1 asks for a call-back, "
              "'a' an agent takes the call, 'hangup'")
DIAL_RESULTS = {"c": "completed", "n": "no-answer", "b": "busy", "f": "failed"}
HANG_UP = ("hangup", "hang up", "q", "quit")


def espeak(text: str) -> None:
    """Speak Mandarin text through espeak-ng, when it is installed."""
    subprocess.run(["espeak-ng", "-v", "cmn", text], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def talk(phone: Phone, read: Callable[[str], str] = input, write: Callable[[str], None] = print,
         speak: bool = False, agent: Agent | None = None, agent_after: float | None = None) -> None:
    """Run one call interactively until it ends.

    In a queue (agent.leg: queue) each Enter lets one announcement cycle pass; `agent` takes the
    caller when 'a' is typed, or by itself once the caller has waited `agent_after` seconds.
    """
    voice = espeak if speak and shutil.which("espeak-ng") else None
    if speak and voice is None:
        write("(espeak-ng is not installed: showing the prompts as text only)")
    shown = spoken = 0

    def show() -> None:
        nonlocal shown, spoken
        for line in phone.transcript[shown:]:
            if line.startswith("<"):
                write(line)
        shown = len(phone.transcript)
        if voice:
            for heard in phone.heard[spoken:]:
                if heard.verb == "Say":  # a <Play> is an audio file: its URL is not read aloud
                    voice(heard.text)
        spoken = len(phone.heard)

    write(f"calling {phone.dialled} from {phone.caller} ({HELP})")
    phone.dial()
    show()
    while not phone.ended:
        try:
            if phone.dialing:
                answer = read("transferred to an agent: [c]ompleted / [n]o-answer / [b]usy / [f]ailed"
                              " (or hangup) > ").strip().lower()
                if answer in HANG_UP:
                    phone.hang_up()
                else:
                    phone.agent_leg_ends(DIAL_RESULTS.get(answer[:1], "completed"))
            elif phone.queued and phone.queued.bridged is not None:
                answer = read("talking to the agent: Enter when the agent hangs up (or hangup) > ").strip()
                phone.hang_up() if answer.lower() in HANG_UP else phone.bridge_ends()
            elif phone.queued and agent is not None:
                queue_turn(phone, agent, agent_after, read, write)
            elif phone.queued:
                answer = read("queued: result [bridged] (or hangup) > ").strip()
                phone.hang_up() if answer.lower() in HANG_UP else phone.leave_queue(answer or "bridged")
            elif phone.waiting and phone.waiting.verb == "Record":
                line = read("recording: seconds of message (empty: say nothing) > ").strip()
                if line.lower() in HANG_UP:
                    phone.hang_up()
                else:
                    phone.record(int(line)) if line.isdigit() else phone.silence()
            else:
                line = read("keys> ").strip()
                if line.lower() in HANG_UP:
                    phone.hang_up()
                elif line == "":
                    phone.silence()
                elif all(c in "0123456789*#" for c in line):
                    phone.press(line)
                else:
                    write(HELP)
                    continue
        except EOFError:
            phone.hang_up()
        except CallFailed as err:
            write(f"(the call failed: {err})")
            phone.hang_up()
        show()
    write("(call ended" + (" after a transfer" if phone.transferred else "") + ")")
    write(f"(recorded as {phone.call_sid}: `flask --app wsgi sim record {phone.call_sid}` exports it)")


def queue_turn(phone: Phone, agent: Agent, agent_after: float | None, read: Callable[[str], str],
               write: Callable[[str], None]) -> None:
    """One turn of waiting in the queue: an agent takes the call when its time has come, else the
    caller waits one announcement (Enter), presses keys, asks for an agent ('a') or hangs up."""
    q = phone.queued
    assert q is not None
    if agent_after is not None and phone.queues.clock - q.since >= agent_after:
        take(phone, agent, write)
        return
    line = read(QUEUE_HELP.split(":")[0] + " > ").strip().lower()
    if line in HANG_UP:
        phone.hang_up()
    elif line == "a":
        take(phone, agent, write)
    elif line and all(c in "0123456789*#" for c in line) and phone.waiting is not None:
        phone.press(line)
    elif line:
        write(QUEUE_HELP)
    else:  # one announcement cycle, or less when the agent's time comes first
        left = q.ends_at - phone.queues.clock
        if agent_after is not None:
            left = min(left, q.since + agent_after - phone.queues.clock)
        phone.wait(max(left, 0.0))


def take(phone: Phone, agent: Agent, write: Callable[[str], None]) -> None:
    """An agent's call takes the next caller from the queue (this one, when first in line)."""
    taken = agent.take()
    for heard in agent.heard:
        write(f"< (the agent hears) {heard.text}")
    agent.heard.clear()
    if taken is not phone:
        write("(the agent took " + ("nobody" if taken is None else "another caller") + ")")
