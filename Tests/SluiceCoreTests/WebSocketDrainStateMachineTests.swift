import SluiceCore
import Testing

private let bothDirections: [WebSocketDrainStateMachine.Direction] = [.clientToUpstream, .upstreamToClient]

/// The drain's close handshake on a WebSocket tunnel, fed frames built by hand (RFC 6455 §5.2):
/// unmasked from the app (the server), masked from the client, with 7-, 16- and 64-bit lengths.
@Suite struct WebSocketDrainStateMachineTests {
    typealias Machine = WebSocketDrainStateMachine
    typealias Plan = WebSocketDrainStateMachine.Plan

    // MARK: - Frames

    enum LengthForm: Sendable, CustomTestStringConvertible {
        case bits7
        case bits16
        case bits64

        var testDescription: String { "\(self)" }
    }

    static let maskingKey: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]

    /// One frame. `length`: the length form, the shortest that fits when nil (a longer one is not
    /// minimal, which RFC 6455 forbids but framing does not depend on).
    static func frame(_ opcode: UInt8, fin: Bool = true, payload: [UInt8], masked: Bool, length: LengthForm? = nil) -> [UInt8] {
        let count = payload.count
        let form = length ?? (count < 126 ? .bits7 : (count <= 0xFFFF ? .bits16 : .bits64))
        let maskBit: UInt8 = masked ? 0x80 : 0
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        switch form {
        case .bits7:
            precondition(count < 126)
            bytes.append(maskBit | UInt8(count))
        case .bits16:
            precondition(count <= 0xFFFF)
            bytes += [maskBit | 126, UInt8(count >> 8), UInt8(count & 0xFF)]
        case .bits64:
            bytes.append(maskBit | 127)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: UInt64(count) >> UInt64(shift))) }
        }
        if masked {
            bytes += Self.maskingKey
            bytes += payload.enumerated().map { $0.element ^ Self.maskingKey[$0.offset % 4] }
        } else {
            bytes += payload
        }
        return bytes
    }

    static func text(_ string: String, fin: Bool = true, masked: Bool, length: LengthForm? = nil) -> [UInt8] {
        Self.frame(0x1, fin: fin, payload: Array(string.utf8), masked: masked, length: length)
    }

    static func binary(count: Int, masked: Bool, length: LengthForm? = nil) -> [UInt8] {
        Self.frame(0x2, payload: (0..<count).map { UInt8(truncatingIfNeeded: $0) }, masked: masked, length: length)
    }

    /// A Close frame with status 1000 and a reason.
    static func close(masked: Bool) -> [UInt8] {
        Self.frame(0x8, payload: [0x03, 0xE8] + Array("bye".utf8), masked: masked)
    }

    static func ping(masked: Bool) -> [UInt8] {
        Self.frame(0x9, payload: Array("hi".utf8), masked: masked)
    }

    /// The client's frames are masked, the app's are not.
    static func masked(_ direction: Machine.Direction) -> Bool { direction == .clientToUpstream }

    static func other(_ direction: Machine.Direction) -> Machine.Direction {
        direction == .clientToUpstream ? .upstreamToClient : .clientToUpstream
    }

    /// `beginClose()`'s answer when `midFrame` is the one direction not at a boundary (nil: both are).
    static func closing(midFrame: Machine.Direction?) -> Machine.BeginAction {
        .closing(injectToUpstream: midFrame != .clientToUpstream, injectToClient: midFrame != .upstreamToClient)
    }

    static func forward(_ count: Int, inject: Bool = false) -> Plan { Plan(forward: count, injectClose: inject) }

    static func receive(_ machine: inout Machine, _ bytes: ArraySlice<UInt8>, from direction: Machine.Direction) -> Plan {
        bytes.withUnsafeBytes { machine.received($0, from: direction) }
    }

    static func receive(_ machine: inout Machine, _ bytes: [UInt8], from direction: Machine.Direction) -> Plan {
        Self.receive(&machine, bytes[...], from: direction)
    }

    static let directions = bothDirections

    // MARK: - Open

    /// Before the drain, every byte passes, whole frames or split anywhere.
    @Test(arguments: bothDirections)
    func openForwardsEverything(_ direction: Machine.Direction) {
        let masked = Self.masked(direction)
        let stream =
            Self.text("hello", masked: masked) + Self.ping(masked: masked) + Self.binary(count: 300, masked: masked)
            + Self.binary(count: 70_000, masked: masked) + Self.text("x", masked: masked, length: .bits64)
        var whole = Machine()
        #expect(Self.receive(&whole, stream, from: direction) == Self.forward(stream.count))
        var split = Machine()
        var offset = 0
        for size in [1, 1, 3, 7, 2, 500, 11, 69_000] {
            #expect(Self.receive(&split, stream[offset..<(offset + size)], from: direction) == Self.forward(size))
            offset += size
        }
        #expect(Self.receive(&split, stream[offset...], from: direction) == Self.forward(stream.count - offset))
        for machine in [whole, split] {
            #expect(!machine.isClosing)
            #expect(!machine.isFinished)
            #expect(!machine.closePassed)
        }
    }

    // MARK: - Closing at a boundary

    /// At a boundary in both directions the Close goes in at once, both ways; after it, data is
    /// dropped, and the session is finished only when both replies came, in either order.
    @Test(arguments: bothDirections)
    func beginCloseAtBoundaryInjectsBothNow(_ firstReply: Machine.Direction) {
        var machine = Machine()
        #expect(Self.receive(&machine, Self.text("hi", masked: true), from: .clientToUpstream) == Self.forward(8))
        #expect(Self.receive(&machine, Self.text("hello", masked: false), from: .upstreamToClient) == Self.forward(7))
        #expect(machine.beginClose() == Self.closing(midFrame: nil))
        #expect(machine.isClosing)
        #expect(!machine.isFinished)
        for direction in Self.directions {
            let masked = Self.masked(direction)
            #expect(Self.receive(&machine, Self.text("late", masked: masked), from: direction) == Self.forward(0))
            #expect(Self.receive(&machine, Self.ping(masked: masked), from: direction) == Self.forward(0))
        }
        #expect(Self.receive(&machine, Self.close(masked: Self.masked(firstReply)), from: firstReply) == Self.forward(0))
        #expect(!machine.isFinished)
        // Data after a reply is still dropped, and a second Close in the same direction is not the other reply.
        #expect(Self.receive(&machine, Self.close(masked: Self.masked(firstReply)), from: firstReply) == Self.forward(0))
        #expect(!machine.isFinished)
        let second = Self.other(firstReply)
        #expect(Self.receive(&machine, Self.text("late", masked: Self.masked(second)), from: second) == Self.forward(0))
        #expect(!machine.isFinished)
        #expect(Self.receive(&machine, Self.close(masked: Self.masked(second)), from: second) == Self.forward(0))
        #expect(machine.isFinished)
        #expect(!machine.closePassed)
    }

    /// A fresh session is at a boundary both ways.
    @Test func beginCloseOnAFreshSession() {
        var machine = Machine()
        #expect(machine.beginClose() == Self.closing(midFrame: nil))
    }

    /// A reply Close split byte by byte is seen on its last byte.
    @Test func replySplitByteByByte() {
        var machine = Machine()
        #expect(machine.beginClose() == Self.closing(midFrame: nil))
        for direction in Self.directions {
            let reply = Self.close(masked: Self.masked(direction))
            for (index, byte) in reply.enumerated() {
                #expect(Self.receive(&machine, [byte], from: direction) == Self.forward(0))
                let last = index == reply.count - 1
                #expect(machine.isFinished == (last && direction == .upstreamToClient))
            }
        }
        #expect(machine.isFinished)
    }

    /// Calling it twice injects once.
    @Test func beginCloseTwice() {
        var machine = Machine()
        #expect(machine.beginClose() == Self.closing(midFrame: nil))
        #expect(machine.beginClose() == .notInjecting)

        var midFrame = Machine()
        let frame = Self.text("hello", masked: false)
        #expect(Self.receive(&midFrame, frame[..<3], from: .upstreamToClient) == Self.forward(3))
        #expect(midFrame.beginClose() == Self.closing(midFrame: .upstreamToClient))
        #expect(midFrame.beginClose() == .notInjecting)
        #expect(Self.receive(&midFrame, frame[3...], from: .upstreamToClient) == Self.forward(frame.count - 3, inject: true))
        #expect(midFrame.beginClose() == .notInjecting)
    }

    // MARK: - Closing mid-frame

    /// The frames each test closes in the middle of, by length form.
    static func frameToSplit(_ form: LengthForm, masked: Bool) -> [UInt8] {
        switch form {
        case .bits7: Self.binary(count: 10, masked: masked)
        case .bits16: Self.binary(count: 200, masked: masked)
        // Not minimal, so that every offset can be tried; the real size is in `midLargeFrame`.
        case .bits64: Self.binary(count: 20, masked: masked, length: .bits64)
        }
    }

    /// A frame in flight when the drain begins: the Close goes in exactly at its end, whether the
    /// rest comes in one read or in two split anywhere, header bytes included. What follows (a data
    /// frame, then the sender's Close) is dropped, the Close counting as its reply.
    @Test(arguments: bothDirections, [LengthForm.bits7, .bits16, .bits64])
    func midFrameInjectsAtTheBoundary(_ direction: Machine.Direction, _ form: LengthForm) {
        let masked = Self.masked(direction)
        let frame = Self.frameToSplit(form, masked: masked)
        let count = frame.count
        let stream = frame + Self.text("after", masked: masked) + Self.close(masked: masked)
        let otherReply = Self.close(masked: !masked)
        var failures: [String] = []
        for first in 1..<count {
            for second in first...stream.count {
                var machine = Machine()
                var plans = [Self.receive(&machine, stream[..<first], from: direction)]
                let begin = machine.beginClose()
                plans.append(Self.receive(&machine, stream[first..<second], from: direction))
                plans.append(Self.receive(&machine, stream[second...], from: direction))
                let finishedEarly = machine.isFinished
                plans.append(Self.receive(&machine, otherReply, from: Self.other(direction)))
                let expected =
                    second < count
                    ? [Self.forward(first), Self.forward(second - first), Self.forward(count - second, inject: true), Self.forward(0)]
                    : [Self.forward(first), Self.forward(count - first, inject: true), Self.forward(0), Self.forward(0)]
                if begin != Self.closing(midFrame: direction) || plans != expected || finishedEarly || !machine.isFinished || machine.closePassed {
                    failures.append("split at \(first) and \(second): \(begin), \(plans), finished \(machine.isFinished)")
                }
            }
        }
        #expect(failures.isEmpty, "\(failures.prefix(5))")
    }

    /// A real 64-bit-length frame (70 000 bytes), the drain beginning after any of its bytes.
    @Test(arguments: bothDirections)
    func midLargeFrameInjectsAtTheBoundary(_ direction: Machine.Direction) {
        let masked = Self.masked(direction)
        let frame = Self.binary(count: 70_000, masked: masked)
        #expect(frame[1] & 0x7F == 127)
        let stream = frame + Self.close(masked: masked)
        var failures: [Int] = []
        for split in 1..<frame.count {
            var machine = Machine()
            let before = Self.receive(&machine, stream[..<split], from: direction)
            let begin = machine.beginClose()
            let rest = Self.receive(&machine, stream[split...], from: direction)
            if before != Self.forward(split) || begin != Self.closing(midFrame: direction) || rest != Self.forward(frame.count - split, inject: true) {
                failures.append(split)
            }
        }
        #expect(failures.isEmpty, "failed splits: \(failures.prefix(10))")
    }

    /// Both directions in flight: each gets the Close at its own boundary.
    @Test func bothDirectionsMidFrame() {
        var machine = Machine()
        let fromClient = Self.binary(count: 300, masked: true)
        let fromApp = Self.text("hello", masked: false)
        #expect(Self.receive(&machine, fromClient[..<100], from: .clientToUpstream) == Self.forward(100))
        #expect(Self.receive(&machine, fromApp[..<1], from: .upstreamToClient) == Self.forward(1))
        #expect(machine.beginClose() == .closing(injectToUpstream: false, injectToClient: false))
        #expect(machine.isClosing)
        #expect(Self.receive(&machine, Array(fromApp[1...]) + Self.ping(masked: false), from: .upstreamToClient) == Self.forward(fromApp.count - 1, inject: true))
        #expect(Self.receive(&machine, fromClient[100..<200], from: .clientToUpstream) == Self.forward(100))
        #expect(Self.receive(&machine, fromClient[200...], from: .clientToUpstream) == Self.forward(fromClient.count - 200, inject: true))
        #expect(!machine.isFinished)
        #expect(Self.receive(&machine, Self.close(masked: false), from: .upstreamToClient) == Self.forward(0))
        #expect(!machine.isFinished)
        #expect(Self.receive(&machine, Self.close(masked: true), from: .clientToUpstream) == Self.forward(0))
        #expect(machine.isFinished)
    }

    // MARK: - Fragmented messages

    /// Between the fragments of a message is a boundary (RFC 6455 §5.4): the Close goes in there,
    /// and the rest of the message is dropped.
    @Test(arguments: bothDirections)
    func closeBetweenFragmentsAtOnce(_ direction: Machine.Direction) {
        let masked = Self.masked(direction)
        let first = Self.text("Hel", fin: false, masked: masked)
        let continuation = Self.frame(0x0, payload: Array("lo".utf8), masked: masked)
        var machine = Machine()
        #expect(Self.receive(&machine, first + Self.ping(masked: masked), from: direction) == Self.forward(first.count + Self.ping(masked: masked).count))
        #expect(machine.beginClose() == Self.closing(midFrame: nil))
        #expect(Self.receive(&machine, continuation, from: direction) == Self.forward(0))
    }

    /// The first fragment in flight: the Close goes in after it, before the continuation that came
    /// in the same read.
    @Test(arguments: bothDirections)
    func closeBetweenFragmentsMidFragment(_ direction: Machine.Direction) {
        let masked = Self.masked(direction)
        let first = Self.text("Hello, ", fin: false, masked: masked)
        let continuation = Self.frame(0x0, payload: Array("world".utf8), masked: masked)
        let stream = first + continuation
        for split in 1..<first.count {
            var machine = Machine()
            #expect(Self.receive(&machine, stream[..<split], from: direction) == Self.forward(split))
            #expect(machine.beginClose() == Self.closing(midFrame: direction))
            #expect(Self.receive(&machine, stream[split...], from: direction) == Self.forward(first.count - split, inject: true))
        }
    }

    // MARK: - Not injecting

    /// A Close that passed before the drain: the session is closing by itself, and bytes go on passing.
    @Test(arguments: bothDirections)
    func closePassedBeforeBeginClose(_ direction: Machine.Direction) {
        let masked = Self.masked(direction)
        let close = Self.close(masked: masked)
        var machine = Machine()
        let hi = Self.text("hi", masked: masked)
        #expect(Self.receive(&machine, hi + Array(close[..<(close.count - 1)]), from: direction) == Self.forward(hi.count + close.count - 1))
        #expect(!machine.closePassed)
        #expect(Self.receive(&machine, close[(close.count - 1)...], from: direction) == Self.forward(1))
        #expect(machine.closePassed)
        #expect(machine.beginClose() == .notInjecting)
        #expect(!machine.isClosing)
        let reply = Self.close(masked: !masked)
        #expect(Self.receive(&machine, reply, from: Self.other(direction)) == Self.forward(reply.count))
        #expect(!machine.isFinished)
    }

    /// Framing the tracker cannot follow: nothing is injected, bytes pass (the handler's timeout ends it).
    @Test(arguments: bothDirections)
    func lostFramingIsNotInjected(_ direction: Machine.Direction) {
        let masked = Self.masked(direction)
        let broken: [[UInt8]] = [
            Self.frame(0x3, payload: [1, 2], masked: masked),  // reserved data opcode
            Self.frame(0xB, payload: [1, 2], masked: masked),  // reserved control opcode
            Self.frame(0x9, fin: false, payload: [1, 2], masked: masked),  // fragmented control frame
            Self.frame(0x9, payload: Array(repeating: 0, count: 126), masked: masked),  // control frame over 125
            [0x82, (masked ? 0x80 : 0) | 127, 0x80, 0, 0, 0, 0, 0, 0, 1],  // 64-bit length with its top bit set
        ]
        for bytes in broken {
            var machine = Machine()
            let good = Self.text("ok", masked: masked)
            #expect(Self.receive(&machine, good + bytes, from: direction) == Self.forward(good.count + bytes.count))
            #expect(machine.beginClose() == .notInjecting)
            #expect(!machine.isClosing)
            #expect(Self.receive(&machine, good, from: direction) == Self.forward(good.count))
            #expect(Self.receive(&machine, Self.close(masked: masked), from: direction) == Self.forward(Self.close(masked: masked).count))
        }
        // Lost one byte at a time (the slow path) too.
        var machine = Machine()
        for byte in Self.frame(0x9, fin: false, payload: [], masked: masked) {
            #expect(Self.receive(&machine, [byte], from: direction) == Self.forward(1))
        }
        #expect(machine.beginClose() == .notInjecting)
    }

    /// A Close in flight when the drain begins is the sender's own: Sluice must not inject a second
    /// Close behind it into the same direction (RFC 6455 §5.5.1), and that Close counts as the
    /// sender's part of the handshake, so the session finishes when the other side's Close comes.
    @Test(arguments: bothDirections)
    func closeInFlightAtBeginClose(_ direction: Machine.Direction) {
        let masked = Self.masked(direction)
        let close = Self.close(masked: masked)
        var machine = Machine()
        #expect(Self.receive(&machine, close[..<3], from: direction) == Self.forward(3))
        #expect(machine.beginClose() == Self.closing(midFrame: direction))
        let rest = Self.receive(&machine, close[3...], from: direction)
        #expect(rest.forward == close.count - 3)
        #expect(!rest.injectClose)
        #expect(Self.receive(&machine, Self.close(masked: !masked), from: Self.other(direction)) == Self.forward(0))
        #expect(machine.isFinished)
    }
}
