use std::fmt;

/// An error from a user-facing tensor operation: bad data, a shape that does not match, a
/// device that is not there. Mistakes inside op chains (mismatched shapes) panic instead, as
/// PyTorch raises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
