import NIOHTTP1
import SluiceCore

extension HTTPHeaders: HeaderFields {
    public func tokens(name: String) -> [Substring] {
        self[canonicalForm: name]
    }

    public func presentNames() -> HeaderNamesPresent {
        var present: HeaderNamesPresent = []
        var hosts = 0
        for (name, _) in self {
            let flag = HeaderNamesPresent.flag(forName: name)
            if flag == .host { hosts += 1 }
            present.formUnion(flag)
        }
        if hosts == 1 { present.insert(.hostOnce) }
        return present
    }

    /// ``presentNames()`` and the fields' size as received (`name: value\r\n` each), in one pass.
    func presentNamesAndSize() -> (present: HeaderNamesPresent, bytes: Int) {
        var present: HeaderNamesPresent = []
        var hosts = 0
        var bytes = 0
        for (name, value) in self {
            let flag = HeaderNamesPresent.flag(forName: name)
            if flag == .host { hosts += 1 }
            present.formUnion(flag)
            bytes += name.utf8.count + value.utf8.count + 4
        }
        if hosts == 1 { present.insert(.hostOnce) }
        return (present, bytes)
    }
}
