//! Writing to standard output and error without panicking when the reader has gone.
//!
//! `std::println!` panics when stdout is a pipe whose reader exited (`gridprobe probes | head`).
//! The binary's `println!`, `print!`, `eprintln!` and `eprint!` (macros in `main.rs` that shadow
//! the standard ones in every module) write through [`write_stdout`] and [`write_stderr`]
//! instead, which end the process quietly on a broken pipe, as `cat` does.

use std::fmt;
use std::io::{self, Write};

/// Exit status after a broken pipe: 128 + SIGPIPE, what a shell reports for a command the
/// signal ended, so `set -o pipefail` scripts still see that the output was cut short.
pub const BROKEN_PIPE_EXIT: u8 = 141;

/// Writes to stdout; a reader that went away ends the process quietly with
/// [`BROKEN_PIPE_EXIT`], any other failure (a full disk behind a redirection) with 1.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        if is_broken_pipe(&e) {
            std::process::exit(i32::from(BROKEN_PIPE_EXIT));
        }
        write_stderr(format_args!(
            "error: cannot write to standard output: {e}\n"
        ));
        std::process::exit(1);
    }
}

/// Writes to stderr; a reader that went away ends the process quietly with
/// [`BROKEN_PIPE_EXIT`]. Other failures are ignored: there is nowhere left to report them.
pub fn write_stderr(args: fmt::Arguments<'_>) {
    if let Err(e) = io::stderr().lock().write_fmt(args) {
        if is_broken_pipe(&e) {
            std::process::exit(i32::from(BROKEN_PIPE_EXIT));
        }
    }
}

/// Whether an I/O error is a write to a pipe nobody reads any more.
pub fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// Whether a command's error comes from a broken pipe anywhere in its chain (output written
/// with `writeln!` to a locked stdout returns it instead of panicking).
pub fn caused_by_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(is_broken_pipe)
}
