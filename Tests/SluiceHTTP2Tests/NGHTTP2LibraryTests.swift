import Testing
import SluiceHTTP2

/// libnghttp2 links and reports a 1.x version.
@Test func libraryVersionIsReported() { #expect(NGHTTP2Library.version.hasPrefix("1.")) }
