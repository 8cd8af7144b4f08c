#ifndef SLUICE_CPROCESS_SHIM_H
#define SLUICE_CPROCESS_SHIM_H
// Supervisor mode's process handling, for what Swift cannot import from glibc: prctl (variadic), the
// wait-status macros, and a posix_spawn set up in one place.
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>

/// Starts `argv[0]` (looked up in PATH) with `envp`, in a process group of its own, with every
/// signal at its default disposition and none blocked: Sluice ignores SIGTERM, SIGINT, SIGQUIT and
/// SIGHUP for its own signal handling, and ignored signals are inherited across exec. Returns 0 or
/// an errno value.
static inline int sluice_spawn(char *const argv[], char *const envp[], pid_t *pid) {
    posix_spawnattr_t attributes;
    int error = posix_spawnattr_init(&attributes);
    if (error != 0) return error;
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    error = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    if (error == 0) error = posix_spawnattr_setpgroup(&attributes, 0);
    if (error == 0) error = posix_spawnattr_setsigdefault(&attributes, &all);
    if (error == 0) error = posix_spawnattr_setsigmask(&attributes, &none);
    if (error == 0) error = posix_spawnp(pid, argv[0], NULL, &attributes, argv, envp);
    posix_spawnattr_destroy(&attributes);
    return error;
}

/// Orphaned descendants of the app are re-parented to Sluice, which reaps them (as PID 1 does).
static inline int sluice_become_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

static inline int sluice_exited(int status) { return WIFEXITED(status); }
static inline int sluice_exit_code(int status) { return WEXITSTATUS(status); }
static inline int sluice_signaled(int status) { return WIFSIGNALED(status); }
static inline int sluice_term_signal(int status) { return WTERMSIG(status); }

#endif
