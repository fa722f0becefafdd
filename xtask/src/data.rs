//! `cargo xtask data NAME [--url BASE]`: install or locate a benchmark set.
//!
//! - `fashion-mnist`: the Debian package `dataset-fashion-mnist` puts it in
//!   `/usr/share/datasets/fashion-mnist`; setup uses it when present, installs
//!   the package where apt is available, and otherwise downloads the four IDX
//!   files from the dataset's official address.
//! - `mnist`, `cifar10`: downloaded from their official addresses.
//!
//! Downloads land in `$LMZH_CACHE_DIR/data/NAME` (where the `data-pipeline`
//! crate looks), fetched with curl into a partial folder that is checked
//! (gzip/IDX headers, tar extraction) and renamed into place only when
//! complete. `--url BASE` fetches the same file names from a mirror.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::flags::{Flags, Parsed};
use crate::setup;

struct Set {
    name: &'static str,
    base: &'static str,
    files: &'static [&'static str],
}

const IDX_FILES: &[&str] = &[
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

const SETS: &[Set] = &[
    Set {
        name: "fashion-mnist",
        base: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        files: IDX_FILES,
    },
    Set {
        name: "mnist",
        base: "https://ossci-datasets.s3.amazonaws.com/mnist/",
        files: IDX_FILES,
    },
    Set {
        name: "cifar10",
        base: "https://www.cs.toronto.edu/~kriz/",
        files: &["cifar-10-binary.tar.gz"],
    },
];

const SYSTEM_FASHION: &str = "/usr/share/datasets/fashion-mnist";

pub const USAGE: &str = "\
usage: cargo xtask data NAME [--url BASE]

NAME is fashion-mnist, mnist or cifar10: found where it is installed (the
Debian package dataset-fashion-mnist) or downloaded once into
$LMZH_CACHE_DIR/data/NAME. --url BASE fetches the same file names from a
mirror.
";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub name: String,
    pub url: Option<String>,
}

pub fn parse(args: &[String]) -> Result<Parsed<Options>> {
    let mut f = Flags::new("data", USAGE, args);
    if f.wants_help() {
        return Ok(f.help());
    }
    let mut name = None;
    let mut url = None;
    while let Some(a) = f.next() {
        match a {
            "--url" => url = Some(f.value(a)?.to_string()),
            other if !other.starts_with('-') && name.is_none() => name = Some(other.to_string()),
            other => return Err(f.unknown(other)),
        }
    }
    let names: Vec<&str> = SETS.iter().map(|s| s.name).collect();
    let name = name.ok_or_else(|| f.error(&format!("NAME is missing: one of {names:?}")))?;
    if !names.contains(&name.as_str()) {
        return Err(f.error(&format!(
            "unknown data set {name:?}; expected one of {names:?}"
        )));
    }
    Ok(Parsed::Run(Options { name, url }))
}

pub fn run(o: &Options) -> Result<()> {
    let url = o.url.as_deref();
    let set = SETS
        .iter()
        .find(|s| s.name == o.name)
        .with_context(|| format!("unknown data set {:?}", o.name))?;
    if set.name == "fashion-mnist" && url.is_none() {
        if has_all(Path::new(SYSTEM_FASHION), set.files) {
            println!("data: fashion-mnist found at {SYSTEM_FASHION}");
            return Ok(());
        }
        if apt_install("dataset-fashion-mnist") && has_all(Path::new(SYSTEM_FASHION), set.files) {
            println!("data: fashion-mnist installed at {SYSTEM_FASHION}");
            return Ok(());
        }
    }
    let dest = setup::cache_dir().join("data").join(set.name);
    let base = url.unwrap_or(set.base);
    fetch(set, base, &dest)?;
    println!("data: {} ready at {}", set.name, dest.display());
    Ok(())
}

fn has_all(dir: &Path, files: &[&str]) -> bool {
    files.iter().all(|f| dir.join(f).is_file())
}

/// Installs a Debian package when apt-get is there and we may use it.
fn apt_install(package: &str) -> bool {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !is_root || Command::new("apt-get").arg("--version").output().is_err() {
        return false;
    }
    println!("data: installing the Debian package {package}");
    Command::new("apt-get")
        .args(["install", "-y", "-q", package])
        .status()
        .is_ok_and(|s| s.success())
}

fn fetch(set: &Set, base: &str, dest: &Path) -> Result<()> {
    let base = if base.ends_with('/') {
        base.to_string()
    } else {
        format!("{base}/")
    };
    setup::install_atomically(
        dest,
        false,
        &format!("{} from {base}", set.name),
        |partial| {
            fs::create_dir_all(partial)?;
            for file in set.files {
                let target = partial.join(file);
                download(&format!("{base}{file}"), &target)?;
                check(&target)?;
            }
            if set.name == "cifar10" {
                let tar = partial.join(set.files[0]);
                let status = Command::new("tar")
                    .arg("-xzf")
                    .arg(&tar)
                    .arg("-C")
                    .arg(partial)
                    .status()
                    .context("running tar")?;
                if !status.success()
                    || !partial
                        .join("cifar-10-batches-bin/test_batch.bin")
                        .is_file()
                {
                    bail!("{}: not the CIFAR-10 binary archive", tar.display());
                }
                fs::remove_file(&tar)?;
            }
            Ok(())
        },
    )
}

fn download(url: &str, target: &PathBuf) -> Result<()> {
    println!("data: fetching {url}");
    let status = Command::new("curl")
        .args([
            "--fail",
            "--location",
            "--silent",
            "--show-error",
            "--retry",
            "2",
            "--max-time",
            "1800",
        ])
        .arg("--output")
        .arg(target)
        .arg(url)
        .status()
        .context("running curl (install curl)")?;
    if !status.success() {
        bail!("download of {url} failed ({status})");
    }
    Ok(())
}

/// A downloaded file must be gzip; IDX files must start with the IDX magic.
fn check(path: &Path) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        bail!(
            "{}: not a gzip file (a web page instead of the data?)",
            path.display()
        );
    }
    if path.to_string_lossy().contains("-idx") {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .context("running gzip")?;
        if !out.status.success() || out.stdout.len() < 8 || out.stdout[..3] != [0, 0, 8] {
            bail!("{}: not a gzipped IDX file", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// Serves files from `dir` on loopback for at most `requests` requests.
    fn serve(dir: PathBuf, requests: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                match fs::read(dir.join(path)) {
                    Ok(body) => {
                        write!(
                            stream,
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .unwrap();
                        stream.write_all(&body).unwrap();
                    }
                    Err(_) => write!(
                        stream,
                        "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                    )
                    .unwrap(),
                }
            }
        });
        format!("http://{addr}/")
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut child = Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        child.wait_with_output().unwrap().stdout
    }

    #[test]
    fn downloads_idx_files_from_a_mirror_atomically() {
        let mirror = tempfile::tempdir().unwrap();
        for f in IDX_FILES {
            fs::write(mirror.path().join(f), gz(&[0, 0, 8, 1, 0, 0, 0, 2, 7, 9])).unwrap();
        }
        let base = serve(mirror.path().to_path_buf(), 4);
        let cache = tempfile::tempdir().unwrap();
        let dest = cache.path().join("fashion-mnist");
        fetch(&SETS[0], &base, &dest).unwrap();
        assert!(has_all(&dest, IDX_FILES));
        assert!(!cache.path().join("fashion-mnist.partial").exists());
        // complete: a second fetch does not touch the network (the server is gone)
        fetch(&SETS[0], "http://127.0.0.1:9/", &dest).unwrap();
    }

    #[test]
    fn arguments_parse_and_errors_show_the_usage() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            parse(&args("mnist --url http://m/")).unwrap(),
            Parsed::Run(Options {
                name: "mnist".into(),
                url: Some("http://m/".into())
            })
        );
        for s in ["--help", "-h", "help", "mnist --help"] {
            assert_eq!(parse(&args(s)).unwrap(), Parsed::Help(USAGE), "{s}");
        }
        for (s, needle) in [
            ("", "NAME is missing"),
            ("imagenet", "unknown data set \"imagenet\""),
            ("mnist --url", "--url needs a value"),
            ("mnist cifar10", "unexpected argument \"cifar10\""),
            ("mnist --fast", "unknown flag \"--fast\""),
        ] {
            let err = parse(&args(s)).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("usage:"), "{s}: {err}");
        }
    }

    #[test]
    fn a_missing_or_wrong_file_leaves_nothing_behind() {
        let mirror = tempfile::tempdir().unwrap();
        fs::write(mirror.path().join(IDX_FILES[0]), b"<html>not found</html>").unwrap();
        let base = serve(mirror.path().to_path_buf(), 2);
        let cache = tempfile::tempdir().unwrap();
        let dest = cache.path().join("mnist");
        let err = fetch(&SETS[1], &base, &dest).unwrap_err();
        assert!(format!("{err:#}").contains("not a gzip file"), "{err:#}");
        assert!(!dest.exists());
    }
}
