import ArgumentParser
import NIOCore
import SluiceCore
import SluiceProxy

/// `sluice demo`: a built-in origin app with Sluice in front of it, and what to try.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Start a small built-in app and Sluice in front of it; Ctrl-C shows the drain.",
        usage: "sluice demo [--FLAG VALUE ...]",
        discussion: """
            Takes the same settings as `sluice run`; --upstream defaults to the built-in app, --listen to \
            127.0.0.1:8080, --admin to 127.0.0.1:9901.


            """ + ProxyOptions.flagsHelp
    )

    @OptionGroup var options: ProxyOptions

    func run() async throws {
        let app: DemoApp
        do {
            app = try await DemoApp.start(host: "127.0.0.1", port: 0)
        } catch {
            Console.error("sluice demo: cannot start the demo app: \(error)")
            throw ExitCode(1)
        }
        let config: SluiceConfig
        let environment = Environment.current
        let defaults = ["upstream": ["http://127.0.0.1:\(app.port)"], "listen": ["127.0.0.1:8080"], "admin": ["127.0.0.1:9901"]]
        do {
            config = try self.options.resolve(environment: environment, defaults: defaults)
        } catch {
            for problem in error.errors { Console.error("sluice: \(problem.message)") }
            await app.stop()
            throw ExitCode(1)
        }
        let code = await Launcher.runProxy(config: config, source: self.options.source(environment: environment, defaults: defaults), narrate: true) { bound in
            let proxy = Launcher.describe(bound.listeners[0])
            let admin = Launcher.describe(bound.admin)
            Console.out(
                """

                Sluice demo: the built-in app listens on 127.0.0.1:\(app.port); Sluice proxies it.
                  proxy      curl -i http://\(proxy)/
                  slow (3 s) curl -i 'http://\(proxy)/slow?ms=3000'
                  streaming  curl -N 'http://\(proxy)/stream?chunks=10&interval_ms=300'
                  upload     head -c 1000000 /dev/urandom | curl -s --data-binary @- http://\(proxy)/echo | wc -c
                  load loop  for i in $(seq 500); do curl -s -o /dev/null -w '%{http_code}\\n' http://\(proxy)/; done | sort | uniq -c
                  readiness  curl -i http://\(admin)/readyz
                  status     curl -s http://\(admin)/status
                  metrics    curl -s http://\(admin)/metrics

                Press Ctrl-C to drain: readiness fails at once while traffic is still served for \(DurationParser.format(config.drain.delay)),
                then the listener closes and open requests get \(DurationParser.format(config.drain.timeout)) to finish.
                A second Ctrl-C skips the rest of the delay; a third one closes everything at once.

                """
            )
        }
        await app.stop()
        throw ExitCode(code)
    }
}
