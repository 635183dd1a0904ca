use std::fmt;

/// A user-facing error, with a message that names what is wrong and where: bad data, a shape
/// that does not match, a device that is not there, a bad setting. Mistakes inside op chains
/// (mismatched shapes) panic instead, as PyTorch raises. The wgan crate uses the same type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error(s)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
