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

Usage: fake_llm.py [--log FILE]. It binds 127.0.0.1 on a free port, prints "PORT <n>" on
its first stdout line, and serves until its stdin is closed (so it dies with its parent).
With --log, every request's conversation is appended to FILE as one JSON line:
  {"api": "chat"|"responses"|"messages", "messages": [{"role": ..., "text": ...}, ...]}
"""

import json
import re
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


def record(api, messages):
    if LOG_PATH is None:
        return
    line = json.dumps({"api": api, "messages": messages})
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
        record("chat", [{"role": m.get("role"), "text": text_of(m.get("content"))} for m in messages])
        last = next((prompt_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        chunks, delay_s, error = plan(last)
        if error is not None:
            self.json(400, {"error": {"message": error, "type": "invalid_request_error"}})
            return
        reply = "".join(chunks)
        ident = self.next_id("chatcmpl")
        model = body.get("model", "fake-model")
        usage = {"prompt_tokens": 10, "completion_tokens": max(1, len(reply) // 4),
                 "total_tokens": 10 + max(1, len(reply) // 4)}
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
        for item in items:
            if isinstance(item, dict) and item.get("type", "message") == "message":
                conversation.append({"role": item.get("role"), "text": text_of(item.get("content")),
                                     "prompt": prompt_of(item.get("content"))})
        record("responses", [{"role": m["role"], "text": m["text"]} for m in conversation])
        last = next((m["prompt"] for m in reversed(conversation) if m["role"] == "user"), "")
        chunks, delay_s, error = plan(last)
        if error is not None:
            self.json(400, {"error": {"message": error, "type": "invalid_request_error"}})
            return
        reply = "".join(chunks)
        rid = self.next_id("resp")
        mid = self.next_id("msg")
        model = body.get("model", "fake-model")
        self.start_sse()
        response = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model,
                    "status": "in_progress", "output": []}
        self.event({"type": "response.created", "response": response}, "response.created")
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
        usage = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": max(1, len(reply) // 4), "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": 10 + max(1, len(reply) // 4)}
        self.event({"type": "response.completed",
                    "response": dict(response, status="completed", output=[done_item], usage=usage)},
                   "response.completed")

    # ----- Anthropic Messages API (claude) ---------------------------------------------

    def anthropic_messages(self, body):
        messages = body.get("messages") or []
        record("messages", [{"role": m.get("role"), "text": text_of(m.get("content"))} for m in messages])
        last = next((prompt_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        chunks, delay_s, error = plan(last)
        if error is not None:
            self.json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": error}})
            return
        reply = "".join(chunks)
        mid = self.next_id("msg")
        model = body.get("model", "claude-fake")
        usage = {"input_tokens": 10, "output_tokens": max(1, len(reply) // 4)}
        message = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 10, "output_tokens": 1}}
        if not body.get("stream"):
            self.json(200, dict(message, content=[{"type": "text", "text": reply}],
                                stop_reason="end_turn", usage=usage))
            return
        self.start_sse()
        self.event({"type": "message_start", "message": message}, "message_start")
        self.event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                   "content_block_start")

        def emit(chunk):
            self.event({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": chunk}}, "content_block_delta")

        self.stream_chunks(chunks, delay_s, emit)
        self.event({"type": "content_block_stop", "index": 0}, "content_block_stop")
        self.event({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]}}, "message_delta")
        self.event({"type": "message_stop"}, "message_stop")


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
