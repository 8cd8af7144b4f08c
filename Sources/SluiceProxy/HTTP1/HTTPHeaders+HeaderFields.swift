import NIOHTTP1
import SluiceCore

extension HTTPHeaders: HeaderFields {
    public func tokens(name: String) -> [Substring] {
        self[canonicalForm: name]
    }
}
