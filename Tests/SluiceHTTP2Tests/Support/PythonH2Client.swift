import Foundation
import SluiceTestSupport

/// A scripted HTTP/2 client in Python (hyperframe + hpack, which come with the `h2` package), for
/// scenarios no stock client can play: acking a PING late, opening streams around GOAWAYs, floods.
///
/// The script prints one JSON object per frame received (`type`, `stream`, …) and per action taken
/// (`type: "SENT"`), and `{"type": "EOF"}` when the server closes the connection.
enum PythonH2Client {
    struct Event: Decodable, Equatable {
        var type: String
        var stream: Int?
        var last: Int?
        var error: Int?
        var status: String?
        var data: String?
        var end: Bool?
    }

    static func run(port: Int, scenario: String, timeout: Duration = .seconds(20)) async throws -> [Event] {
        let script = try ProcessRunner.temporaryFile(Data(Self.script.utf8), name: "client.py")
        defer { try? FileManager.default.removeItem(atPath: script) }
        let result = try await ProcessRunner.run("/usr/bin/env", ["python3", script, String(port), scenario], timeout: timeout)
        guard result.status == 0, !result.timedOut else {
            throw ScriptFailed(status: result.status, stderr: result.stderr, stdout: result.stdoutString)
        }
        return try result.stdoutString.split(separator: "\n").map {
            try JSONDecoder().decode(Event.self, from: Data($0.utf8))
        }
    }

    struct ScriptFailed: Error, CustomStringConvertible {
        var status: Int32
        var stderr: String
        var stdout: String
        var description: String { "python client exited \(status): \(stderr)\n\(stdout)" }
    }

    static let script = #"""
    import json, socket, sys, time
    import hpack
    import hyperframe.frame as hf

    port, scenario = int(sys.argv[1]), sys.argv[2]

    if scenario == "idle":
        # Open N connections, finish the SETTINGS exchange on each, report, then hold them idle.
        count, hold = int(sys.argv[3]), float(sys.argv[4])
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + hf.SettingsFrame(0).serialize()
        ack = hf.SettingsFrame(0, flags=["ACK"]).serialize()
        sockets = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(preface)
            sockets.append(s)
        for s in sockets:
            got = b""
            while len(got) < 9 or len(got) < 9 + int.from_bytes(got[:3], "big"):
                chunk = s.recv(65536)
                if not chunk:
                    raise SystemExit("server closed an idle connection")
                got += chunk
            s.sendall(ack)
        print(json.dumps({"type": "READY", "stream": count}), flush=True)
        time.sleep(hold)
        for s in sockets:
            s.close()
        sys.exit(0)

    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    encoder, decoder = hpack.Encoder(), hpack.Decoder()
    pending = b""

    def emit(**fields):
        print(json.dumps(fields), flush=True)

    def send(*frames):
        try:
            sock.sendall(b"".join(f.serialize() for f in frames))
        except (BrokenPipeError, ConnectionResetError) as error:
            emit(type="SENDFAILED", data=str(error))

    def request(stream_id, path):
        frame = hf.HeadersFrame(stream_id)
        frame.data = encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", path)])
        frame.flags.add("END_HEADERS")
        frame.flags.add("END_STREAM")
        return frame

    def read_frame():
        global pending
        while True:
            if len(pending) >= 9:
                frame, length = hf.Frame.parse_frame_header(memoryview(pending[:9]))
                if len(pending) >= 9 + length:
                    frame.parse_body(memoryview(pending[9:9 + length]))
                    pending = pending[9 + length:]
                    return frame
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            pending += chunk

    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    send(hf.SettingsFrame(0))

    if scenario == "drain":
        # Stream 1 starts the drain. Stream 3 is opened after the shutdown notice but before the PING is
        # acked (so before the final GOAWAY): it must be served. Stream 5 is opened after the final
        # GOAWAY: it must be ignored or refused.
        send(request(1, "/drain"))
    elif scenario == "rapid-reset":
        frames = []
        for i in range(300):
            stream_id = 1 + 2 * i
            frames.append(request(stream_id, "/"))
            frames.append(hf.RstStreamFrame(stream_id, error_code=8))
        send(*frames)
        emit(type="SENT", stream=599)
    elif scenario == "ping-flood":
        send(*[hf.PingFrame(0, opaque_data=i.to_bytes(8, "big")) for i in range(200)])
        emit(type="SENT")
    elif scenario == "get":
        send(request(1, "/"))

    goaways = 0
    deadline = time.time() + 15
    while time.time() < deadline:
        frame = read_frame()
        if frame is None:
            emit(type="EOF")
            break
        if isinstance(frame, hf.SettingsFrame):
            if "ACK" not in frame.flags:
                send(hf.SettingsFrame(0, flags=["ACK"]))
            emit(type="SETTINGS", end="ACK" in frame.flags)
        elif isinstance(frame, hf.GoAwayFrame):
            goaways += 1
            emit(type="GOAWAY", last=frame.last_stream_id, error=frame.error_code)
            if scenario == "drain" and goaways == 2:
                send(request(5, "/"))
                emit(type="SENT", stream=5)
        elif isinstance(frame, hf.PingFrame):
            if "ACK" in frame.flags:
                emit(type="PINGACK", data=frame.opaque_data.hex())
            else:
                emit(type="PING", data=frame.opaque_data.hex())
                if scenario == "drain" and goaways == 1:
                    send(request(3, "/"))
                    emit(type="SENT", stream=3)
                send(hf.PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
        elif isinstance(frame, hf.HeadersFrame):
            headers = dict((k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v) for k, v in decoder.decode(frame.data))
            emit(type="HEADERS", stream=frame.stream_id, status=headers.get(":status"), end="END_STREAM" in frame.flags)
        elif isinstance(frame, hf.DataFrame):
            emit(type="DATA", stream=frame.stream_id, data=frame.data.decode("utf-8", "replace"), end="END_STREAM" in frame.flags)
        elif isinstance(frame, hf.RstStreamFrame):
            emit(type="RST", stream=frame.stream_id, error=frame.error_code)
        if scenario == "get" and isinstance(frame, hf.DataFrame) and "END_STREAM" in frame.flags:
            break
    else:
        emit(type="TIMEOUT")
    sock.close()
    """#
}
