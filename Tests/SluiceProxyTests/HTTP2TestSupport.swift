import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceTestSupport

/// The HTTP/2 clients the proxy's HTTP/2 tests drive: nghttp, curl, h2load and a scripted Python
/// client (hpack + hyperframe, which come with the `h2` package) for frame-level checks.
enum HTTP2Tools {
    static let nghttp = "/usr/bin/nghttp"
    static let curl = "/usr/bin/curl"
    static let h2load = "/usr/bin/h2load"

    /// A body that is not a multiple of any frame or window size.
    static func body(size: Int) -> Data {
        var data = Data(capacity: size + 80)
        var line = 0
        while data.count < size {
            data.append(contentsOf: "line \(line) of the request body, echoed back byte for byte\n".utf8)
            line += 1
        }
        return data.prefix(size)
    }

    /// Runs a tool with a bounded wait (past `timeout` it is killed, by its pid), its output in files.
    static func run(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(60)) async throws -> Curl.Result {
        let result = try await ProcessRunner.run(executable, arguments, timeout: timeout)
        return Curl.Result(exitCode: result.status, stdout: result.stdoutString, stderr: result.stderr)
    }
}

/// A scripted HTTP/2 client in Python. It prints one JSON object per frame received (`type`,
/// `stream`, …) and per action taken (`type: "SENT"`), and `{"type": "EOF"}` when the server closes.
///
/// Scenarios:
/// - `get PATH`: one GET on stream 1, until it ends (or is reset).
/// - `get-wait PATH`: one GET on stream 1, then PINGs are acked until the server closes.
/// - `late SECONDS PATH`: connect, stay silent SECONDS, then as `get-wait`.
/// - `drain PATH`: a GET on stream 1; after the first GOAWAY (the shutdown notice) a GET /hello on
///   stream 3, which must be served; PINGs are acked; runs until the server closes.
/// - `bad-headers`: stream 1 carries `connection: keep-alive`, stream 3 `te: gzip`, stream 5 is a
///   valid GET /hello; until stream 5 ends.
/// - `reset PATH`: a GET on stream 1, RST_STREAM(CANCEL) on it 300 ms later, then GET /hello on
///   stream 3, until it ends.
/// - `stall N PATH reset|close`: SETTINGS_INITIAL_WINDOW_SIZE 0, never opened, and N GETs (streams 1,
///   3, …): every response waits on flow control. `reset`: until every stream is reset; `close`: once
///   every stream's HEADERS arrived, prints `READY` and closes the connection.
enum PythonH2Script {
    struct Event: Decodable, Equatable, CustomStringConvertible {
        var type: String
        var stream: Int?
        var last: Int?
        var error: Int?
        var status: String?
        var data: String?
        var end: Bool?
        var fields: [String: String]?
        var description: String {
            [type, stream.map { "stream=\($0)" }, last.map { "last=\($0)" }, error.map { "error=\($0)" }, status, end == true ? "END" : nil]
                .compactMap { $0 }.joined(separator: " ")
        }
    }

    struct Failed: Error, CustomStringConvertible {
        var result: Curl.Result
        var description: String { "python client exited \(result.exitCode): \(result.stderr)\n\(result.stdout)" }
    }

    static func run(port: Int, _ arguments: [String]) async throws -> [Event] {
        let script = try ProcessRunner.temporaryFile(Data(Self.script.utf8), name: "client.py")
        defer { try? FileManager.default.removeItem(atPath: script) }
        let result = try await HTTP2Tools.run("/usr/bin/env", ["python3", script, String(port)] + arguments)
        guard result.exitCode == 0 else { throw Failed(result: result) }
        return try result.stdout.split(separator: "\n").map { try JSONDecoder().decode(Event.self, from: Data($0.utf8)) }
    }

    static let script = #"""
    import json, signal, socket, sys, time
    import hpack
    import hyperframe.frame as hf

    signal.alarm(40)  # never outlive the test
    port, scenario, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    encoder, decoder = hpack.Encoder(), hpack.Decoder()
    pending = b""

    def emit(**fields):
        print(json.dumps(fields), flush=True)

    def send(*frames):
        try:
            sock.sendall(b"".join(f.serialize() for f in frames))
        except (BrokenPipeError, ConnectionResetError) as error:
            emit(type="SENDFAILED", data=str(error))

    def request(stream_id, path, extra=()):
        frame = hf.HeadersFrame(stream_id)
        frame.data = encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", path)] + list(extra))
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
            except socket.timeout:
                return "timeout"
            if not chunk:
                return None
            pending += chunk

    if scenario == "late":
        # Connected, silent for a while (the proxy cannot tell the protocol yet), then a GET.
        time.sleep(float(args[0]))
        args = args[1:]
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    send(hf.SettingsFrame(0))
    last_stream = 1
    if scenario in ("get", "drain", "get-wait", "late"):
        send(request(1, args[0]))
    elif scenario == "bad-headers":
        send(request(1, "/hello", [("connection", "keep-alive")]),
             request(3, "/hello", [("te", "gzip")]),
             request(5, "/hello"))
        last_stream = 5
    elif scenario == "stall":
        stall_count, stall_mode = int(args[0]), args[2]
        send(hf.SettingsFrame(0, settings={4: 0}))  # SETTINGS_INITIAL_WINDOW_SIZE = 0
        send(*[request(1 + 2 * i, args[1]) for i in range(stall_count)])
        stall_heads, stall_resets = set(), set()
    elif scenario == "reset":
        send(request(1, args[0]))
        time.sleep(0.3)
        send(hf.RstStreamFrame(1, error_code=8))
        emit(type="SENT", stream=1)
        send(request(3, "/hello"))
        last_stream = 3

    goaways = 0
    deadline = time.time() + 30
    while time.time() < deadline:
        frame = read_frame()
        if frame is None:
            emit(type="EOF")
            break
        if frame == "timeout":
            emit(type="TIMEOUT")
            break
        if isinstance(frame, hf.SettingsFrame):
            if "ACK" not in frame.flags:
                send(hf.SettingsFrame(0, flags=["ACK"]))
            emit(type="SETTINGS", end="ACK" in frame.flags)
        elif isinstance(frame, hf.GoAwayFrame):
            goaways += 1
            emit(type="GOAWAY", last=frame.last_stream_id, error=frame.error_code)
            if scenario == "drain" and goaways == 1:
                send(request(3, "/hello"))
                emit(type="SENT", stream=3)
        elif isinstance(frame, hf.PingFrame):
            if "ACK" not in frame.flags:
                emit(type="PING", data=frame.opaque_data.hex())
                send(hf.PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
        elif isinstance(frame, hf.HeadersFrame):
            headers = dict((k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v) for k, v in decoder.decode(frame.data))
            emit(type="HEADERS", stream=frame.stream_id, status=headers.get(":status"), end="END_STREAM" in frame.flags, fields=headers)
        elif isinstance(frame, hf.DataFrame):
            emit(type="DATA", stream=frame.stream_id, data=frame.data.decode("utf-8", "replace"), end="END_STREAM" in frame.flags)
        elif isinstance(frame, hf.RstStreamFrame):
            emit(type="RST", stream=frame.stream_id, error=frame.error_code)
        if scenario == "stall":
            if isinstance(frame, hf.HeadersFrame):
                stall_heads.add(frame.stream_id)
            if isinstance(frame, hf.RstStreamFrame):
                stall_resets.add(frame.stream_id)
            if stall_mode == "close" and len(stall_heads) == stall_count:
                emit(type="READY")
                break
            if stall_mode == "reset" and len(stall_resets) == stall_count:
                break
            continue
        ended = isinstance(frame, (hf.DataFrame, hf.HeadersFrame)) and "END_STREAM" in frame.flags and frame.stream_id == last_stream
        ended = ended or (isinstance(frame, hf.RstStreamFrame) and frame.stream_id == last_stream)
        if scenario not in ("drain", "get-wait", "late") and ended:
            break
    else:
        emit(type="TIMEOUT")
    sock.close()
    """#
}

extension Array where Element == PythonH2Script.Event {
    /// The response body of `stream`, joined from its DATA frames.
    func body(of stream: Int) -> String {
        self.filter { $0.type == "DATA" && $0.stream == stream }.compactMap(\.data).joined()
    }

    func status(of stream: Int) -> String? {
        self.first { $0.type == "HEADERS" && $0.stream == stream }?.status
    }

    var goAways: [PythonH2Script.Event] { self.filter { $0.type == "GOAWAY" } }
}

/// An upstream whose every response is chunked with trailers: `abc`, then `x-checksum: 900150983cd24fb0`.
enum TrailerUpstream {
    static func start() async throws -> TestServer {
        try await TestServer.startHTTP1 { Handler() }
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = Self.unwrapInboundIn(data) else { return }
            let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["transfer-encoding": "chunked", "trailer": "x-checksum"])
            context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "abc")))), promise: nil)
            context.writeAndFlush(Self.wrapOutboundOut(.end(["x-checksum": "900150983cd24fb0"])), promise: nil)
        }
    }
}
