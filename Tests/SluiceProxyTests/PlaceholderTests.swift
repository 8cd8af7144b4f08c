import Testing
import SluiceProxy
@Test func placeholder() {}
