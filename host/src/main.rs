//! `adapter-host`: see `adapter-host --help`.

fn main() -> std::process::ExitCode {
    adapter_host::cli::main()
}
