//! The `airlock` binary: a thin shell over the library.

/// jemalloc: every request allocates on two threads, where glibc's arenas spent a fifth of
/// the proxy's CPU; mimalloc was as fast but kept twice the memory (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // `airlock doctor` judges the environment as the user set it.
    airlock::cli::remember_environment();
    // airlock's own AWS calls must never be pointed at airlock (or anywhere an agent's
    // environment says): drop endpoint overrides before anything reads the environment.
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| k.starts_with("AWS_ENDPOINT_URL"))
        {
            std::env::remove_var(key);
        }
    }
    airlock::cli::main()
}
