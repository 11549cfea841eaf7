//! Standard output for command rendering: every write reports its error
//! instead of panicking as `println!` does ("failed printing to stdout");
//! standard error through `errln!`, which never panics.
//!
//! A reader that went away (`host summary | head`) is [`StdoutError`] with
//! [`std::io::ErrorKind::BrokenPipe`], which `main` ends quietly on; any
//! other failure (`> /dev/full`: no space left) is reported as an error.
use std::fmt;
use std::io::Write;

/// Writing to standard output failed.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output: {0}")]
pub struct StdoutError(#[source] pub std::io::Error);

impl StdoutError {
    /// Whether the reader closed the pipe (not worth an error message).
    pub fn is_broken_pipe(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }
}

/// Write `args` to standard output and flush, so that a full disk or a closed
/// pipe is seen here, at the write that failed.
pub fn write(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).and_then(|()| out.flush()).map_err(StdoutError)
}

/// `print!` that returns a [`StdoutError`] instead of panicking.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::out::write(format_args!($($t)*)) };
}

/// `println!` that returns a [`StdoutError`] instead of panicking.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::write(format_args!("\n")) };
    ($($t:tt)*) => { $crate::out::write(format_args!("{}\n", format_args!($($t)*))) };
}

/// `eprintln!` that never panics: diagnostics on standard error are best
/// effort, and a closed stderr (a pipe whose reader left) must not turn a
/// run that is going well into a panic ("failed printing to stderr").
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

/// `name` with control characters escaped (`\n`, `\u{1b}`), for names read
/// from files (class names) that would otherwise reach the terminal raw.
pub fn printable(name: &str) -> String {
    name.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Whether `e` (or one of its causes) is a closed standard output pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<StdoutError>().is_some_and(StdoutError::is_broken_pipe))
}
