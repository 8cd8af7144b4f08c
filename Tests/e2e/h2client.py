#!/usr/bin/env python3
"""HTTP/2 (h2c prior knowledge) load process for the rolling-update drain test.

Like loadgen.py, but every request is a stream on a shared, multiplexed HTTP/2 connection. Written on
hyperframe + hpack (they come with the `h2` package: `pip install h2`) rather than h2's connection
object, because h2 closes its connection state on the first GOAWAY and so cannot see the streams a
two-phase GOAWAY (RFC 9113 §6.8) lets finish.

The client behaves like a well-behaved HTTP/2 client pool: after any GOAWAY it opens no new stream on
that connection (its next requests go on a new connection, which is not a retry); streams already sent
run to completion. Nothing is ever retried. Failure kinds: `connect_refused`, `reset_on_connect`,
`connect_error`, `refused_stream` (RST_STREAM REFUSED_STREAM), `refused_by_goaway` (a stream above a
GOAWAY's last stream id), `reset_stream_<code>`, `eof_before_response`, `eof_mid_response`, `timeout`,
`status_<code>`, `bad_body`.

Each pooled connection carries --gets GET / loops, --slow /slow loops, --streams /stream loops and
--uploads POST /upload loops (256 KiB, checked by sha256), all multiplexed.

Writes the same records as loadgen.py to --out ([t_start, t_end, kind, outcome, served_by,
reused_connection, false]) plus HTTP/2 counters: connections opened, GOAWAYs seen (notice: last stream
id 2^31-1; final: any other), and how many connections saw each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import hpack
import hyperframe.frame as hf

from records import Failure, Recorder, add_common_arguments, parse

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NOTICE_LAST_STREAM = 2**31 - 1
OUR_WINDOW = 1 << 30


class Stream:
    __slots__ = ("body", "done", "headers", "id", "send_window", "status", "window_event")

    def __init__(self, sid: int, window: int) -> None:
        self.id = sid
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.send_window = window
        self.window_event = asyncio.Event()


class H2Conn:
    """One client connection: a frame reader task, HPACK state, flow control for uploads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: dict) -> None:
        self.reader = reader
        self.writer = writer
        self.stats = stats
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.next_id = 1
        self.streams: dict[int, Stream] = {}
        self.goaway_last: int | None = None
        self.goaways: list[int] = []
        self.dead = False
        self.used = 0
        self.conn_window = 65535
        self.peer_initial_window = 65535
        self.max_frame = 16384
        self.window_event = asyncio.Event()
        self.received_since_update = 0
        self.task: asyncio.Task | None = None

    @classmethod
    async def open(cls, host: str, port: int, stats: dict) -> H2Conn:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except ConnectionRefusedError as e:
            raise Failure("connect_refused", str(e))
        except ConnectionResetError as e:
            raise Failure("reset_on_connect", str(e))
        except OSError as e:
            raise Failure("connect_error", f"{e.__class__.__name__}: {e}")
        conn = cls(reader, writer, stats)
        settings = hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: OUR_WINDOW,
                                                 hf.SettingsFrame.ENABLE_PUSH: 0})
        update = hf.WindowUpdateFrame(0, window_increment=OUR_WINDOW - 65535)
        writer.write(PREFACE + settings.serialize() + update.serialize())
        conn.task = asyncio.get_running_loop().create_task(conn.read_loop())
        stats["connections_opened"] += 1
        return conn

    def usable(self) -> bool:
        return not self.dead and self.goaway_last is None

    def close(self) -> None:
        self.dead = True
        try:
            self.writer.close()
        except Exception:
            pass

    def _write(self, *frames) -> None:
        if self.dead:
            return
        try:
            self.writer.write(b"".join(f.serialize() for f in frames))
        except (ConnectionResetError, BrokenPipeError, RuntimeError):
            pass

    async def request(self, method: str, path: str, body: bytes = b"") -> Stream:
        if not self.usable():
            raise Failure("internal", "request on an unusable connection")
        sid = self.next_id
        self.next_id += 2
        self.used += 1
        st = Stream(sid, self.peer_initial_window)
        self.streams[sid] = st
        headers = [(":method", method), (":scheme", "http"), (":authority", "e2e.test"), (":path", path),
                   ("user-agent", "e2e-h2client")]
        if body:
            headers.append(("content-length", str(len(body))))
        frame = hf.HeadersFrame(sid)
        frame.data = self.enc.encode(headers)
        frame.flags.add("END_HEADERS")
        if not body:
            frame.flags.add("END_STREAM")
        self._write(frame)
        view = memoryview(body)
        sent = 0
        while sent < len(body):
            for _ in range(100_000):
                if st.done.done() or self.dead:
                    break
                allowed = min(self.conn_window, st.send_window, self.max_frame)
                if allowed > 0:
                    break
                self.window_event.clear()
                st.window_event.clear()
                waiters = [asyncio.ensure_future(self.window_event.wait()), asyncio.ensure_future(st.window_event.wait())]
                await asyncio.wait(waiters + [st.done], return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
            if st.done.done() or self.dead:
                break
            chunk = view[sent:sent + allowed]
            sent += len(chunk)
            self.conn_window -= len(chunk)
            st.send_window -= len(chunk)
            data = hf.DataFrame(sid, data=bytes(chunk))
            if sent == len(body):
                data.flags.add("END_STREAM")
            self._write(data)
            if self.writer.transport.get_write_buffer_size() > 1 << 20:
                await self.writer.drain()
        return await st.done

    def _finish(self, st: Stream) -> None:
        self.streams.pop(st.id, None)
        if not st.done.done():
            st.done.set_result(st)

    def _fail(self, st: Stream, kind: str, detail: str = "") -> None:
        self.streams.pop(st.id, None)
        if not st.done.done():
            st.done.set_exception(Failure(kind, detail))

    async def read_loop(self) -> None:
        buf = bytearray()
        header_block: tuple[int, bytearray, bool] | None = None
        try:
            for _ in range(100_000_000):
                while len(buf) >= 9:
                    frame, length = hf.Frame.parse_frame_header(memoryview(buf)[:9])
                    if len(buf) < 9 + length:
                        break
                    frame.parse_body(memoryview(bytes(buf[9:9 + length])))
                    del buf[:9 + length]
                    header_block = self._on_frame(frame, header_block)
                data = await self.reader.read(1 << 16)
                if not data:
                    break
                buf += data
        except (ConnectionResetError, BrokenPipeError, OSError):
            pass
        self.dead = True
        for st in list(self.streams.values()):
            self._fail(st, "eof_mid_response" if st.status is not None else "eof_before_response",
                       f"stream {st.id}")
        self.window_event.set()

    def _on_frame(self, frame, header_block):
        if isinstance(frame, hf.SettingsFrame):
            if "ACK" not in frame.flags:
                if hf.SettingsFrame.INITIAL_WINDOW_SIZE in frame.settings:
                    new = frame.settings[hf.SettingsFrame.INITIAL_WINDOW_SIZE]
                    delta = new - self.peer_initial_window
                    self.peer_initial_window = new
                    for st in self.streams.values():
                        st.send_window += delta
                        st.window_event.set()
                if hf.SettingsFrame.MAX_FRAME_SIZE in frame.settings:
                    self.max_frame = frame.settings[hf.SettingsFrame.MAX_FRAME_SIZE]
                self._write(hf.SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, hf.PingFrame):
            if "ACK" not in frame.flags:
                self._write(hf.PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
        elif isinstance(frame, hf.WindowUpdateFrame):
            if frame.stream_id == 0:
                self.conn_window += frame.window_increment
                self.window_event.set()
            elif frame.stream_id in self.streams:
                st = self.streams[frame.stream_id]
                st.send_window += frame.window_increment
                st.window_event.set()
        elif isinstance(frame, (hf.HeadersFrame, hf.ContinuationFrame)):
            if isinstance(frame, hf.HeadersFrame):
                header_block = (frame.stream_id, bytearray(frame.data), "END_STREAM" in frame.flags)
            elif header_block is not None:
                header_block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags and header_block is not None:
                sid, block, end = header_block
                header_block = None
                fields = self.dec.decode(bytes(block))  # always decoded: HPACK state is per connection
                st = self.streams.get(sid)
                if st is not None:
                    hdrs = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                            for k, v in fields}
                    status = int(hdrs.get(":status", "0"))
                    if st.status is None and not (100 <= status < 200):
                        st.status = status
                        st.headers = hdrs
                    if end:
                        self._finish(st)
        elif isinstance(frame, hf.DataFrame):
            self.received_since_update += frame.flow_controlled_length
            st = self.streams.get(frame.stream_id)
            if st is not None:
                st.body += frame.data
                if "END_STREAM" in frame.flags:
                    self._finish(st)
            if self.received_since_update > OUR_WINDOW // 4:
                # Top up the connection window; stream windows are large enough for any test response.
                self._write(hf.WindowUpdateFrame(0, window_increment=self.received_since_update))
                self.received_since_update = 0
        elif isinstance(frame, hf.RstStreamFrame):
            st = self.streams.get(frame.stream_id)
            if st is not None:
                kind = "refused_stream" if frame.error_code == 7 else f"reset_stream_{frame.error_code}"
                self._fail(st, kind, f"stream {frame.stream_id}")
        elif isinstance(frame, hf.GoAwayFrame):
            last = frame.last_stream_id
            self.goaways.append(last)
            self.stats["goaway_notice" if last == NOTICE_LAST_STREAM else "goaway_final"] += 1
            self.goaway_last = last if self.goaway_last is None else min(self.goaway_last, last)
            for st in list(self.streams.values()):
                if st.id > self.goaway_last:
                    self._fail(st, "refused_by_goaway", f"stream {st.id} > last {self.goaway_last}")
        return header_block


class Pool:
    """One pooled connection shared by several request loops; replaced once it saw a GOAWAY or died."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.conn: H2Conn | None = None
        self.opening: asyncio.Future | None = None

    async def get(self) -> tuple[H2Conn, bool]:
        for _ in range(1000):
            c = self.conn
            if c is not None and c.usable():
                return c, c.used > 0
            if self.opening is not None:
                await asyncio.shield(self.opening)
                continue
            if c is not None:
                self.worker.stats["pool_replaced"] += 1
                if not c.streams:
                    c.close()
                else:
                    asyncio.get_running_loop().create_task(self._close_when_idle(c))
            self.opening = asyncio.get_running_loop().create_future()
            try:
                self.conn = await H2Conn.open(self.worker.host, self.worker.port, self.worker.stats)
            finally:
                fut, self.opening = self.opening, None
                fut.set_result(None)
            return self.conn, False
        raise Failure("internal", "pool spun")

    @staticmethod
    async def _close_when_idle(c: H2Conn) -> None:
        for _ in range(1200):
            if not c.streams or c.dead:
                break
            await asyncio.sleep(0.05)
        c.close()


class Worker(Recorder):
    def __init__(self, args) -> None:
        super().__init__(args)
        self.host = args.host
        self.port = args.port
        self.stats = {"connections_opened": 0, "goaway_notice": 0, "goaway_final": 0, "pool_replaced": 0}

    async def one(self, pool: Pool, kind: str, method: str, path: str, body: bytes, timeout: float) -> None:
        ts = time.monotonic()
        reused = False
        try:
            async def run() -> str:
                nonlocal reused
                conn, reused = await pool.get()
                st = await conn.request(method, path, body)
                return self.check(kind[2:], st.status, st.headers.get("x-origin", ""), bytes(st.body))
            served = await asyncio.wait_for(run(), timeout)
        except Failure as f:
            self.record(ts, kind, f.kind, "", reused, f.detail)
            return
        except TimeoutError:
            self.record(ts, kind, "timeout", "", reused)
            return
        self.record(ts, kind, "ok", served, reused)

    async def loop(self, pool: Pool, kind: str, idx: int) -> None:
        a = self.args
        if kind == "h2get":
            method, path, body, timeout, pause = "GET", "/", b"", a.timeout, a.think_ms / 1000.0
        elif kind == "h2slow":
            method, path, body, timeout, pause = "GET", f"/slow?ms={a.slow_ms}", b"", a.timeout + a.slow_ms / 1000.0, 0.0
            await asyncio.sleep(idx * a.slow_ms / 1000.0 / max(1, a.slow))
        elif kind == "h2stream":
            dur = a.stream_chunks * a.stream_interval_ms / 1000.0
            method, path, body, timeout, pause = ("GET", f"/stream?chunks={a.stream_chunks}&interval_ms={a.stream_interval_ms}",
                                                  b"", a.timeout + dur, 0.0)
            await asyncio.sleep(idx * dur / max(1, a.streams))
        else:
            method, path, body, timeout, pause = "POST", "/upload", self.upload_body, a.timeout, a.upload_interval_ms / 1000.0
        for _ in range(10_000_000):
            if time.monotonic() >= self.t_stop:
                break
            await self.one(pool, kind, method, path, body, timeout)
            if pause:
                await asyncio.sleep(self.rnd.uniform(0, pause))

    async def run(self) -> None:
        a = self.args
        await self.wait_for_start()
        prog = asyncio.get_running_loop().create_task(self.progress())
        tasks = []
        pools = [Pool(self) for _ in range(a.conns)]
        for pool in pools:
            tasks += [self.loop(pool, "h2get", i) for i in range(a.gets)]
            tasks += [self.loop(pool, "h2slow", i) for i in range(a.slow)]
            tasks += [self.loop(pool, "h2stream", i) for i in range(a.streams)]
            tasks += [self.loop(pool, "h2upload", i) for i in range(a.uploads)]
        await asyncio.gather(*tasks)
        prog.cancel()
        for pool in pools:
            if pool.conn is not None:
                pool.conn.close()
        print(self.progress_line(), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap)
    ap.add_argument("--conns", type=int, default=2, help="pooled HTTP/2 connections")
    ap.add_argument("--gets", type=int, default=4, help="GET / loops per connection")
    ap.add_argument("--slow", type=int, default=1, help="slow-request loops per connection")
    ap.add_argument("--streams", type=int, default=1, help="streaming-response loops per connection")
    ap.add_argument("--uploads", type=int, default=1, help="upload loops per connection")
    w = Worker(parse(ap))
    asyncio.run(w.run())
    w.write_result(w.args.out, h2=w.stats, connections_opened=w.stats["connections_opened"],
                   pool_discards=w.stats["pool_replaced"],
                   connection_close_seen=w.stats["goaway_notice"] + w.stats["goaway_final"])


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(1)
