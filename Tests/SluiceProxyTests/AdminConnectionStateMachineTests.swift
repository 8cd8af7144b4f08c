import Testing

@testable import SluiceProxy

@Suite struct AdminConnectionStateMachineTests {
    typealias Machine = AdminConnectionStateMachine<String>

    /// The answer a machine gave, as text, so tests can compare actions.
    static func describe(_ action: Machine.Action) -> String {
        switch action {
        case .none: "none"
        case .answer(let request, let close): close ? "answer \(request), close" : "answer \(request)"
        case .fail(.malformed(let detail)): "400 \(detail)"
        case .fail(.headTooLarge): "431"
        case .close: "close"
        }
    }

    /// Pipelined requests are answered one at a time, in the order they came.
    @Test func pipelinedRequestsAreAnsweredOneAtATimeInOrder() {
        var machine = Machine()
        #expect(Self.describe(machine.requestReceived("a", keepAlive: true, isConnect: false)) == "answer a")
        #expect(Self.describe(machine.requestReceived("b", keepAlive: true, isConnect: false)) == "none")
        #expect(Self.describe(machine.answerSent()) == "answer b")
        #expect(Self.describe(machine.answerSent()) == "none")
        #expect(Self.describe(machine.requestReceived("c", keepAlive: true, isConnect: false)) == "answer c")
    }

    /// A request that does not keep the connection alive is answered with close; nothing after it is.
    @Test func aRequestWithoutKeepAliveClosesAndNothingAfterItIsAnswered() {
        var machine = Machine()
        #expect(Self.describe(machine.requestReceived("a", keepAlive: false, isConnect: false)) == "answer a, close")
        #expect(Self.describe(machine.requestReceived("b", keepAlive: true, isConnect: false)) == "none")
        #expect(Self.describe(machine.parseFailed(.headTooLarge)) == "none")
    }

    /// CONNECT is answered with close even on a keep-alive connection: what follows may be tunnel bytes.
    @Test func connectClosesTheConnection() {
        var machine = Machine()
        #expect(Self.describe(machine.requestReceived("CONNECT", keepAlive: true, isConnect: true)) == "answer CONNECT, close")
        #expect(Self.describe(machine.requestReceived("x", keepAlive: true, isConnect: false)) == "none")
    }

    /// A parse error behind a request being answered is answered after it, then the connection closes.
    @Test func aParseErrorIsAnsweredAfterTheRequestsBeforeIt() {
        var machine = Machine()
        #expect(Self.describe(machine.requestReceived("a", keepAlive: true, isConnect: false)) == "answer a")
        #expect(Self.describe(machine.parseFailed(.malformed("bare CR"))) == "none")
        #expect(Self.describe(machine.answerSent()) == "400 bare CR")
    }

    /// Input that ends mid-request closes at once when nothing is owed, else after the answers owed.
    @Test func truncatedInputClosesAfterTheAnswersOwed() {
        var idle = Machine()
        #expect(Self.describe(idle.inputTruncated()) == "close")

        var busy = Machine()
        #expect(Self.describe(busy.requestReceived("a", keepAlive: true, isConnect: false)) == "answer a")
        #expect(Self.describe(busy.inputTruncated()) == "none")
        #expect(Self.describe(busy.answerSent()) == "close")
    }
}
