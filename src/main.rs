// mimalloc: a request allocates a few dozen small, short-lived blocks (headers, URI,
// futures); mimalloc's thread-local free lists serve them measurably faster than glibc's
// malloc (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keygate::cli::main()
}
