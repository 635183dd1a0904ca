//! `--download DIR`: fetch the full MNIST (60,000 + 10,000 digits) and check every file's
//! SHA-256 before it is used.

use earthmover_wgan::data::MNIST_FILES;
use earthmover_wgan::io::write_atomic;
use earthmover_wgan::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The mirror PyTorch's torchvision uses.
pub const DEFAULT_MIRROR: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";

/// SHA-256 of the four files of the original MNIST distribution, in [`MNIST_FILES`] order.
pub const MNIST_SHA256: [&str; 4] = [
    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
];

/// The largest file we accept (the training images are 9.9 MB).
const MAX_BYTES: u64 = 64 << 20;

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Download each missing file from `mirror` into `dir`, verifying `checksums`. Files already in
/// `dir` with the right checksum are kept; a file with a wrong one is an error and is not
/// overwritten silently.
pub fn download(dir: &Path, mirror: &str, checksums: &[&str; 4]) -> Result<()> {
    earthmover_wgan::io::ensure_writable_dir(dir)?;
    for (name, expected) in MNIST_FILES.iter().zip(checksums) {
        let path = dir.join(name);
        if let Ok(existing) = std::fs::read(&path) {
            let actual = sha256_hex(&existing);
            if actual == *expected {
                continue;
            }
            return Err(Error(format!(
                "{} exists but its SHA-256 is {actual}, not {expected}: remove it and download again",
                path.display()
            )));
        }
        let url = format!("{}/{name}", mirror.trim_end_matches('/'));
        eprintln!("downloading {url}");
        let bytes = fetch(&url)?;
        let actual = sha256_hex(&bytes);
        if actual != *expected {
            return Err(Error(format!(
                "{url}: SHA-256 is {actual}, expected {expected}: the download is corrupt"
            )));
        }
        write_atomic(&path, &bytes)?;
    }
    Ok(())
}

fn fetch(url: &str) -> Result<Vec<u8>> {
    let fail = |e: String| Error(format!("cannot download {url}: {e}"));
    let response = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(MAX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A minimal HTTP/1.1 server on 127.0.0.1 that serves `files` by name (404 otherwise) to
    /// at most `max_requests` requests, then stops.
    fn serve(files: HashMap<String, Vec<u8>>, max_requests: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/mnist/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(max_requests) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                // Drain the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
                let name = path.rsplit('/').next().unwrap_or("");
                let (status, body) = match files.get(name) {
                    Some(body) => ("200 OK", body.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        url
    }

    fn dataset() -> (HashMap<String, Vec<u8>>, [String; 4]) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
        let mut files = HashMap::new();
        let mut sums: [String; 4] = Default::default();
        for (i, name) in MNIST_FILES.iter().enumerate() {
            let bytes = std::fs::read(root.join(name)).unwrap();
            sums[i] = sha256_hex(&bytes);
            files.insert(name.to_string(), bytes);
        }
        (files, sums)
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("em-download-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn downloads_verifies_and_loads() {
        let (files, sums) = dataset();
        let url = serve(files, 4);
        let dir = scratch("ok");
        let sums: Vec<&str> = sums.iter().map(String::as_str).collect();
        download(&dir, &url, &sums.clone().try_into().unwrap()).unwrap();
        let data = earthmover_wgan::data::Mnist::load_dir(&dir).unwrap();
        assert_eq!((data.train.len(), data.test.len()), (9000, 1000));
        // Files already there and correct are not fetched again (the server is gone).
        download(&dir, "http://127.0.0.1:1/", &sums.try_into().unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wrong_checksum_is_refused_and_nothing_is_written() {
        let (files, mut sums) = dataset();
        sums[0] = "0".repeat(64);
        let url = serve(files, 1);
        let dir = scratch("bad-sum");
        let sums: Vec<&str> = sums.iter().map(String::as_str).collect();
        let err = download(&dir, &url, &sums.try_into().unwrap()).unwrap_err().0;
        assert!(
            err.contains("SHA-256") && err.contains("train-images-idx3-ubyte.gz"),
            "{err}"
        );
        assert!(!dir.join(MNIST_FILES[0]).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_on_the_server_is_an_error() {
        let url = serve(HashMap::new(), 1);
        let dir = scratch("404");
        let err = download(&dir, &url, &MNIST_SHA256).unwrap_err().0;
        assert!(err.contains("cannot download") && err.contains("404"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
