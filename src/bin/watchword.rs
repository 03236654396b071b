//! The `watchword` command line; everything is in [`watchword::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    watchword::cli::main()
}
