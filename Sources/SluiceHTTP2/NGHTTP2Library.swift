private import CNghttp2
import SluiceCore

/// The libnghttp2 version this process runs against, e.g. "1.52.0".
public enum NGHTTP2Library {
    public static var version: String {
        guard let info = nghttp2_version(0), let string = info.pointee.version_str else { return "unknown" }
        return String(cString: string)
    }
}
