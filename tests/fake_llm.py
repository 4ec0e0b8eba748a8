#!/usr/bin/env python3
"""A fake LLM backend for the test suite: stdlib only, loopback only, deterministic.

Speaks just enough of three APIs for real AI coding CLIs to hold a conversation with it:
  POST /v1/chat/completions   OpenAI chat completions, streaming (SSE) or not (aider)
  POST /v1/responses          OpenAI Responses API, streaming (codex)
  POST /v1/messages           Anthropic Messages API, streaming or not (claude)

The reply to a conversation is decided by its last user message:
  - by default: "FAKE-REPLY: " + the message's first line (clients append instructions);
  - [[reply:TEXT]]   the reply is exactly TEXT ("\\n" in TEXT is a newline);
  - [[chunks:A|B|C]] the reply is A+B+C, streamed as those chunks ("\\n" escapes too);
  - [[delay:MS]]     wait MS milliseconds before each chunk after the first (a stall);
  - [[error:TEXT]]   answer with an HTTP 400 API error carrying TEXT.
Without [[chunks:]] a reply streams in chunks of 8 characters.

Tool markers make the model change things, in each API's own format, one tool call per
model request, in the order the markers appear; once every call has its result back, the
model answers "TOOLS-DONE: " + each result (its lines joined by " / ", at most 400
characters; results joined by " || "), or [[reply:]]:
  - [[write:PATH|CONTENT]]      create or overwrite PATH
  - [[edit:PATH|OLD|NEW]]       replace the first OLD in PATH by NEW
  - [[bash:COMMAND]]            run a shell command
  - [[escalate:COMMAND]]        run a shell command outside the sandbox (codex asks for
                                `require_escalated`; elsewhere the same as bash)
  - [[ask:QUESTION]]            ask the user (claude's AskUserQuestion; elsewhere ignored)
  Anthropic (claude): tool_use Write {file_path, content}, Read then Edit {file_path,
  old_string, new_string}, Bash {command}; relative paths are made absolute with the
  "working directory" claude names in its system prompt.
  Responses API (codex): function_call exec_command {cmd} with a shell command per marker.
  Chat completions (aider): one reply holding an edit block per write/edit marker, in the
  format aider's system prompt asks for (SEARCH/REPLACE blocks, else whole files).

Tokens are counted, not guessed: input tokens are the request's conversation (its JSON,
without the tool definitions) in 64-byte units, rounded up; output tokens the reply's JSON
in 16-byte units. Anthropic reports half the input as cache reads and a quarter as cache
writes; the Responses API reports half as cached. Each request's counts are in its log line.

Usage: fake_llm.py [--log FILE]. It binds 127.0.0.1 on a free port, prints "PORT <n>" on
its first stdout line, and serves until its stdin is closed (so it dies with its parent).
With --log, every request's conversation is appended to FILE as one JSON line:
  {"api": "chat"|"responses"|"messages", "messages": [{"role": ..., "text": ...}, ...],
   "usage": {"input": N, "output": N, "cache_read": N, "cache_write": N}, "tool": NAME|null}
"""

import json
import math
import re
import shlex
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG_LOCK = threading.Lock()
LOG_PATH = None
COUNTER = [0]


def text_of(content):
    """The text of a message's content: a string, or a list of typed parts (joined by
    newlines)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("text"):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def prompt_of(content):
    """What the user typed: the last text part of a message (clients put reminders and
    context in parts before it)."""
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("text")]
        return texts[-1] if texts else ""
    return text_of(content)


def unescape(text):
    return text.replace("\\n", "\n")


def plan(message):
    """(chunks, delay_s, error) for the reply to `message`."""
    error = re.search(r"\[\[error:(.*?)\]\]", message, re.S)
    if error:
        return [], 0.0, unescape(error.group(1))
    delay = re.search(r"\[\[delay:(\d+)\]\]", message)
    delay_s = int(delay.group(1)) / 1000.0 if delay else 0.0
    chunks = re.search(r"\[\[chunks:(.*?)\]\]", message, re.S)
    if chunks:
        return [unescape(c) for c in chunks.group(1).split("|")], delay_s, None
    reply = re.search(r"\[\[reply:(.*?)\]\]", message, re.S)
    if reply:
        text = unescape(reply.group(1))
    else:
        plain = re.sub(r"\[\[\w+:.*?\]\]", "", message, flags=re.S).strip()
        text = "FAKE-REPLY: " + (plain.splitlines() or [""])[0].strip()
    return [text[i:i + 8] for i in range(0, len(text), 8)] or [""], delay_s, None


TOOL_MARKER = re.compile(r"\[\[(write|edit|bash|escalate|ask):(.*?)\]\]", re.S)


def tool_steps(message):
    """The tool markers of `message`, in order: [(kind, [fields])]."""
    steps = []
    for kind, body in TOOL_MARKER.findall(message):
        fields = [unescape(f) for f in body.split("|")]
        want = {"write": 2, "edit": 3, "bash": 1, "escalate": 1, "ask": 1}[kind]
        if kind in ("bash", "escalate", "ask"):
            fields = [unescape(body)]
        if len(fields) == want:
            steps.append((kind, fields))
    return steps


def final_reply(message, results):
    """The answer once every tool call has its result."""
    reply = re.search(r"\[\[reply:(.*?)\]\]", message, re.S)
    if reply:
        return unescape(reply.group(1))
    flat = [" / ".join(line.strip() for line in r.strip().splitlines() if line.strip())[:400]
            for r in results]
    return "TOOLS-DONE: " + " || ".join(flat)


def count_tokens(conversation, reply):
    """(input, output) tokens of one request: see the module docs."""
    sent = len(json.dumps(conversation, sort_keys=True).encode())
    received = len(json.dumps(reply, sort_keys=True).encode())
    return max(1, math.ceil(sent / 64)), max(1, math.ceil(received / 16))


def record(api, messages, usage=None, tool=None):
    if LOG_PATH is None:
        return
    line = json.dumps({"api": api, "messages": messages, "usage": usage, "tool": tool})
    with LOG_LOCK:
        with open(LOG_PATH, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self.json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self.json(200, {"ok": True})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.json(400, {"error": {"message": "invalid JSON"}})
            return
        path = self.path.split("?")[0]
        if path.endswith("/chat/completions"):
            self.chat_completions(body)
        elif path.endswith("/responses"):
            self.openai_responses(body)
        elif path.endswith("/messages"):
            self.anthropic_messages(body)
        else:
            self.json(404, {"error": {"message": "no such endpoint " + path}})

    # ----- helpers ---------------------------------------------------------------------

    def json(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def event(self, data, name=None):
        out = ""
        if name:
            out += "event: " + name + "\n"
        out += "data: " + (data if isinstance(data, str) else json.dumps(data)) + "\n\n"
        self.wfile.write(out.encode())
        self.wfile.flush()

    def stream_chunks(self, chunks, delay_s, emit):
        for i, chunk in enumerate(chunks):
            if i > 0 and delay_s:
                time.sleep(delay_s)
            emit(chunk)

    def next_id(self, prefix):
        with LOG_LOCK:
            COUNTER[0] += 1
            return "%s_%06d" % (prefix, COUNTER[0])

    # ----- OpenAI chat completions (aider through litellm) -----------------------------

    def chat_completions(self, body):
        messages = body.get("messages") or []
        texts = [{"role": m.get("role"), "text": text_of(m.get("content"))} for m in messages]
        last = next((prompt_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        system = "\n".join(t["text"] for t in texts if t["role"] == "system")
        tool = None
        if "commit message" in system.lower():
            chunks, delay_s, error = ["aim: apply the requested change"], 0.0, None
            tool = "commit-message"
        elif tool_steps(last):
            chunks, delay_s, error = [aider_edits(tool_steps(last), system, texts, last)], 0.0, None
            tool = "edit-blocks"
        else:
            chunks, delay_s, error = plan(last)
        if error is not None:
            record("chat", texts)
            self.json(400, {"error": {"message": error, "type": "invalid_request_error"}})
            return
        reply = "".join(chunks)
        sent, received = count_tokens(messages, reply)
        record("chat", texts, {"input": sent, "output": received, "cache_read": 0, "cache_write": 0}, tool)
        ident = self.next_id("chatcmpl")
        model = body.get("model", "fake-model")
        usage = {"prompt_tokens": sent, "completion_tokens": received, "total_tokens": sent + received}
        if not body.get("stream"):
            self.json(200, {
                "id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "finish_reason": "stop"}],
                "usage": usage,
            })
            return
        self.start_sse()
        base = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

        def emit(chunk):
            self.event(dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": chunk},
                                            "finish_reason": None}]))

        self.stream_chunks(chunks, delay_s, emit)
        self.event(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        self.event(dict(base, choices=[], usage=usage))
        self.event("[DONE]")

    # ----- OpenAI Responses API (codex) ------------------------------------------------

    def openai_responses(self, body):
        items = body.get("input") or []
        conversation = []
        prompt_at = -1
        for n, item in enumerate(items):
            if isinstance(item, dict) and item.get("type", "message") == "message":
                conversation.append({"role": item.get("role"), "text": text_of(item.get("content")),
                                     "prompt": prompt_of(item.get("content"))})
                if item.get("role") == "user":
                    prompt_at = n
        texts = [{"role": m["role"], "text": m["text"]} for m in conversation]
        last = next((m["prompt"] for m in reversed(conversation) if m["role"] == "user"), "")
        results = [output_text(i.get("output")) for i in items[prompt_at + 1:]
                   if isinstance(i, dict) and i.get("type") == "function_call_output"]
        steps = tool_steps(last)
        call = None
        if steps and len(results) < len(steps):
            call = codex_call(*steps[len(results)])
            chunks, delay_s, error = [], 0.0, None
        elif steps:
            chunks, delay_s, error = [final_reply(last, results)], 0.0, None
        else:
            chunks, delay_s, error = plan(last)
        if error is not None:
            record("responses", texts)
            self.json(400, {"error": {"message": error, "type": "invalid_request_error"}})
            return
        reply = "".join(chunks)
        sent, received = count_tokens(items, call if call else reply)
        cached = sent // 2
        record("responses", texts, {"input": sent - cached, "output": received, "cache_read": cached,
                                    "cache_write": 0}, call and call["name"])
        rid = self.next_id("resp")
        mid = self.next_id("msg")
        model = body.get("model", "fake-model")
        self.start_sse()
        response = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model,
                    "status": "in_progress", "output": []}
        self.event({"type": "response.created", "response": response}, "response.created")
        usage = {"input_tokens": sent, "input_tokens_details": {"cached_tokens": cached},
                 "output_tokens": received, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": sent + received}
        if call:
            fid = self.next_id("fc")
            item = {"type": "function_call", "id": fid, "call_id": "call_" + fid, "name": call["name"],
                    "arguments": "", "status": "in_progress"}
            self.event({"type": "response.output_item.added", "output_index": 0, "item": item},
                       "response.output_item.added")
            self.event({"type": "response.function_call_arguments.delta", "item_id": fid, "output_index": 0,
                        "delta": call["arguments"]}, "response.function_call_arguments.delta")
            self.event({"type": "response.function_call_arguments.done", "item_id": fid, "output_index": 0,
                        "arguments": call["arguments"]}, "response.function_call_arguments.done")
            done_item = dict(item, arguments=call["arguments"], status="completed")
            self.event({"type": "response.output_item.done", "output_index": 0, "item": done_item},
                       "response.output_item.done")
            self.event({"type": "response.completed",
                        "response": dict(response, status="completed", output=[done_item], usage=usage)},
                       "response.completed")
            return
        item = {"type": "message", "id": mid, "role": "assistant", "status": "in_progress", "content": []}
        self.event({"type": "response.output_item.added", "output_index": 0, "item": item},
                   "response.output_item.added")
        self.event({"type": "response.content_part.added", "item_id": mid, "output_index": 0,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
                   "response.content_part.added")

        def emit(chunk):
            self.event({"type": "response.output_text.delta", "item_id": mid, "output_index": 0,
                        "content_index": 0, "delta": chunk}, "response.output_text.delta")

        self.stream_chunks(chunks, delay_s, emit)
        self.event({"type": "response.output_text.done", "item_id": mid, "output_index": 0,
                    "content_index": 0, "text": reply}, "response.output_text.done")
        done_item = {"type": "message", "id": mid, "role": "assistant", "status": "completed",
                     "content": [{"type": "output_text", "text": reply, "annotations": []}]}
        self.event({"type": "response.output_item.done", "output_index": 0, "item": done_item},
                   "response.output_item.done")
        self.event({"type": "response.completed",
                    "response": dict(response, status="completed", output=[done_item], usage=usage)},
                   "response.completed")

    # ----- Anthropic Messages API (claude) ---------------------------------------------

    def anthropic_messages(self, body):
        messages = body.get("messages") or []
        texts = [{"role": m.get("role"), "text": text_of(m.get("content"))} for m in messages]
        prompt_at = -1
        for n, m in enumerate(messages):
            if m.get("role") == "user" and not has_part(m.get("content"), "tool_result"):
                prompt_at = n
        last = prompt_of(messages[prompt_at].get("content")) if prompt_at >= 0 else ""
        results = [output_text(p.get("content")) for m in messages[prompt_at + 1:]
                   for p in (m.get("content") if isinstance(m.get("content"), list) else [])
                   if isinstance(p, dict) and p.get("type") == "tool_result"]
        system = text_of(body.get("system"))
        cwd = re.search(r"[Ww]orking directory: (\S+)", system)
        steps = [s for step in tool_steps(last) for s in claude_calls(step, cwd.group(1) if cwd else "")]
        call = None
        if steps and len(results) < len(steps):
            call = steps[len(results)]
            chunks, delay_s, error = [], 0.0, None
        elif steps:
            chunks, delay_s, error = [final_reply(last, results)], 0.0, None
        else:
            chunks, delay_s, error = plan(last)
        if error is not None:
            record("messages", texts)
            self.json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": error}})
            return
        reply = "".join(chunks)
        sent, received = count_tokens(messages, call if call else reply)
        cache_read, cache_write = sent // 2, sent // 4
        fresh = sent - cache_read - cache_write
        record("messages", texts, {"input": fresh, "output": received, "cache_read": cache_read,
                                   "cache_write": cache_write}, call and call["name"])
        mid = self.next_id("msg")
        model = body.get("model", "claude-fake")
        start_usage = {"input_tokens": fresh, "cache_creation_input_tokens": cache_write,
                       "cache_read_input_tokens": cache_read, "output_tokens": 1}
        usage = dict(start_usage, output_tokens=received)
        stop = "tool_use" if call else "end_turn"
        message = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": start_usage}
        if call:
            block = {"type": "tool_use", "id": "toolu_" + mid, "name": call["name"], "input": call["input"]}
        else:
            block = {"type": "text", "text": reply}
        if not body.get("stream"):
            self.json(200, dict(message, content=[block], stop_reason=stop, usage=usage))
            return
        self.start_sse()
        self.event({"type": "message_start", "message": message}, "message_start")
        if call:
            self.event({"type": "content_block_start", "index": 0, "content_block": dict(block, input={})},
                       "content_block_start")
            self.event({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(call["input"])}},
                       "content_block_delta")
        else:
            self.event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                       "content_block_start")

            def emit(chunk):
                self.event({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": chunk}}, "content_block_delta")

            self.stream_chunks(chunks, delay_s, emit)
        self.event({"type": "content_block_stop", "index": 0}, "content_block_stop")
        self.event({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": received}}, "message_delta")
        self.event({"type": "message_stop"}, "message_stop")


def has_part(content, kind):
    return isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == kind for p in content)


def output_text(output):
    """A tool result's text: a string, or typed parts."""
    if isinstance(output, str):
        return output
    return text_of(output) if output is not None else ""


def claude_calls(step, cwd):
    """The Anthropic tool calls for one marker."""
    kind, fields = step

    def absolute(path):
        return path if path.startswith("/") or not cwd else cwd.rstrip("/") + "/" + path

    if kind == "write":
        return [{"name": "Write", "input": {"file_path": absolute(fields[0]), "content": fields[1]}}]
    if kind == "edit":
        path = absolute(fields[0])
        return [{"name": "Read", "input": {"file_path": path}},
                {"name": "Edit", "input": {"file_path": path, "old_string": fields[1], "new_string": fields[2]}}]
    if kind == "ask":
        return [{"name": "AskUserQuestion", "input": {"questions": [{
            "question": fields[0], "header": "Question", "multiSelect": False,
            "options": [{"label": "Yes", "description": "yes"}, {"label": "No", "description": "no"}]}]}}]
    return [{"name": "Bash", "input": {"command": fields[0], "description": "Run the requested command"}}]


def codex_call(kind, fields):
    """The Responses-API function call (codex's exec_command) for one marker."""
    if kind == "ask":
        cmd = "true"
    elif kind == "write":
        cmd = "printf %s " + shlex.quote(fields[1]) + " > " + shlex.quote(fields[0])
    elif kind == "edit":
        script = "import sys; p, a, b = sys.argv[1:]; s = open(p).read(); open(p, 'w').write(s.replace(a, b, 1))"
        cmd = " ".join(shlex.quote(a) for a in ["python3", "-c", script] + fields)
    else:
        cmd = fields[0]
    arguments = {"cmd": cmd, "yield_time_ms": 10000}
    if kind == "escalate":
        arguments.update(sandbox_permissions="require_escalated", justification="the prompt asks for it")
    return {"name": "exec_command", "arguments": json.dumps(arguments)}


def aider_edits(steps, system, texts, prompt):
    """One reply with an edit block per write/edit marker, in the format aider's system
    prompt asks for: SEARCH/REPLACE blocks, else whole files."""
    diff = "SEARCH" in system and "REPLACE" in system
    out = ["Making the requested changes."]
    for kind, fields in steps:
        if kind not in ("write", "edit"):
            continue
        path = fields[0]
        if diff:
            old, new = ("", fields[1]) if kind == "write" else (fields[1], fields[2])
            out.append("%s\n```\n<<<<<<< SEARCH\n%s=======\n%s>>>>>>> REPLACE\n```" % (
                path, old + "\n" if old else "", new + "\n"))
        else:
            if kind == "write":
                content = fields[1]
            else:
                content = file_in_chat(texts, path).replace(fields[1], fields[2], 1)
            out.append("%s\n```\n%s\n```" % (path, content.rstrip("\n")))
    return "\n\n".join(out) + "\n"


def file_in_chat(texts, path):
    """A file's content as aider showed it in the chat (`path` then a fenced block)."""
    for message in reversed(texts):
        found = re.search(re.escape(path) + r"\n```[^\n]*\n(.*?)\n```", message["text"], re.S)
        if found:
            return found.group(1)
    return ""


def main():
    global LOG_PATH
    args = sys.argv[1:]
    if "--log" in args:
        LOG_PATH = args[args.index("--log") + 1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("PORT %d" % server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Serve until our parent closes our stdin (or dies).
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except KeyboardInterrupt:
        pass
    server.shutdown()


if __name__ == "__main__":
    main()
