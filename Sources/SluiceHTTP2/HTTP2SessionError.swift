/// An error of the HTTP/2 layer.
///
/// A struct with an open set of codes, so that cases can be added without breaking callers; two errors
/// are equal when their codes are.
public struct HTTP2SessionError: Error, Hashable, CustomStringConvertible {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case badInput
            case sessionFailure
            case submissionFailed
            case invalidStreamState
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The peer's bytes were not HTTP/2 (bad preface, flood, fatal protocol error); close the connection.
        public static let badInput = Code(.badInput)
        /// libnghttp2 failed internally (out of memory, a callback failed); close the connection.
        public static let sessionFailure = Code(.sessionFailure)
        /// A frame could not be submitted (the stream is gone, or the session is going away).
        public static let submissionFailed = Code(.submissionFailed)
        /// The call does not fit the stream's state (data before a head, a head twice).
        public static let invalidStreamState = Code(.invalidStreamState)

        public var description: String {
            switch self.base {
            case .badInput: "badInput"
            case .sessionFailure: "sessionFailure"
            case .submissionFailed: "submissionFailed"
            case .invalidStreamState: "invalidStreamState"
            }
        }
    }

    public let code: Code
    /// libnghttp2's error number, when it reported one (negative, `nghttp2_error`).
    public let libraryErrorNumber: Int32?
    public let message: String
    public let fileID: String
    public let line: Int

    private init(code: Code, libraryErrorNumber: Int32?, message: String, fileID: String, line: Int) {
        self.code = code
        self.libraryErrorNumber = libraryErrorNumber
        self.message = message
        self.fileID = fileID
        self.line = line
    }

    public static func badInput(
        libraryErrorNumber: Int32?, message: String, fileID: String = #fileID, line: Int = #line
    ) -> Self {
        Self(code: .badInput, libraryErrorNumber: libraryErrorNumber, message: message, fileID: fileID, line: line)
    }

    public static func sessionFailure(
        libraryErrorNumber: Int32?, message: String, fileID: String = #fileID, line: Int = #line
    ) -> Self {
        Self(code: .sessionFailure, libraryErrorNumber: libraryErrorNumber, message: message, fileID: fileID, line: line)
    }

    public static func submissionFailed(
        libraryErrorNumber: Int32?, message: String, fileID: String = #fileID, line: Int = #line
    ) -> Self {
        Self(code: .submissionFailed, libraryErrorNumber: libraryErrorNumber, message: message, fileID: fileID, line: line)
    }

    public static func invalidStreamState(_ message: String, fileID: String = #fileID, line: Int = #line) -> Self {
        Self(code: .invalidStreamState, libraryErrorNumber: nil, message: message, fileID: fileID, line: line)
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(self.code) }

    public var description: String {
        "HTTP2SessionError.\(self.code): \(self.message)" + (self.libraryErrorNumber.map { " (nghttp2 \($0))" } ?? "")
    }
}
