//! The fuzz harness of the loaders' `tests/fuzz.rs` files (included with
//! `#[path]`): hostile bytes, random and mutated from valid files, into every
//! parser a user's file reaches. Stable Rust, no fuzzing engine.
//!
//! - `LMZH_FUZZ_CASES` inputs per loader (default 3,000, what `cargo test`
//!   and CI run; `cargo xtask fuzz --full` runs 1,000,000), from the seed
//!   `LMZH_FUZZ_SEED` (default: one per loader, so runs repeat exactly);
//! - every input runs under `catch_unwind`: a panic fails the test with the
//!   input saved under `target/tmp/fuzz/`; `LMZH_FUZZ_INPUT=FILE` (or hex)
//!   replays one input without catching;
//! - [`CappedAlloc`] as the test binary's allocator turns an allocation over
//!   [`ALLOC_LIMIT`] into an abort that names the loader, case and input, so
//!   a header that claims a terabyte cannot go unnoticed.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::Instant;

/// The largest single allocation a loader may make on fuzz input (whose
/// inputs are kilobytes): 1 GiB.
pub const ALLOC_LIMIT: usize = 1 << 30;

/// Inputs per loader when `LMZH_FUZZ_CASES` is unset.
pub const DEFAULT_CASES: u64 = 3_000;

/// Largest input the mutator makes.
const MAX_LEN: usize = 64 * 1024;

thread_local! {
    /// (loader, case, input) being run on this thread, for the abort message.
    static CURRENT: Cell<(&'static str, u64, *const u8, usize)> =
        const { Cell::new(("", 0, std::ptr::null(), 0)) };
    /// Whether a panic on this thread is an expected fuzz finding (recorded,
    /// not printed).
    static FUZZING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The system allocator, refusing (and reporting) any single allocation
/// over [`ALLOC_LIMIT`].
#[derive(Debug)]
pub struct CappedAlloc;

unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT {
            oversize(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT {
            oversize(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_LIMIT {
            oversize(new_size);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A `fmt::Write` into a stack buffer: formatting without allocating.
struct StackBuf {
    buf: [u8; 512],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Reports an oversized allocation without allocating; the caller then
/// returns null and Rust aborts.
fn oversize(size: usize) {
    use std::fmt::Write as _;
    let (name, case, ptr, len) = CURRENT.with(Cell::get);
    let mut msg = StackBuf {
        buf: [0; 512],
        len: 0,
    };
    let _ = write!(
        msg,
        "\nfuzz {name}: case {case} asked for one allocation of {size} bytes (limit \
         {ALLOC_LIMIT}); input ({len} bytes, hex):\n"
    );
    let mut err = std::io::stderr();
    let _ = err.write_all(&msg.buf[..msg.len]);
    if !ptr.is_null() {
        // SAFETY: set by `fuzz` to the input slice alive during the call.
        let input = unsafe { std::slice::from_raw_parts(ptr, len.min(8192)) };
        for chunk in input.chunks(128) {
            let mut line = StackBuf {
                buf: [0; 512],
                len: 0,
            };
            for b in chunk {
                let _ = write!(line, "{b:02x}");
            }
            let _ = err.write_all(&line.buf[..line.len]);
        }
        let _ = err.write_all(b"\n");
    }
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if FUZZING.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let payload = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(non-string panic)".into());
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{payload}{location}")));
            } else {
                default(info);
            }
        }));
    });
}

/// Inputs per loader: `LMZH_FUZZ_CASES` or [`DEFAULT_CASES`].
pub fn cases() -> u64 {
    std::env::var("LMZH_FUZZ_CASES")
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("LMZH_FUZZ_CASES={v:?} is not a count"))
        })
        .unwrap_or(DEFAULT_CASES)
}

/// splitmix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// Integers that break arithmetic, as 1, 2, 4 or 8 bytes either endianness.
const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 40,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// Tokens that break text formats (JSON, TOML): numbers at the edges,
/// wrong types, nesting, escapes.
const TOKENS: [&str; 32] = [
    "0",
    "-1",
    "1e308",
    "-1e308",
    "1e-320",
    "NaN",
    "Infinity",
    "-Infinity",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "1099511627776",
    "0.5",
    "true",
    "null",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[",
    "{",
    "]",
    "}",
    ",",
    ":",
    "=",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\n[a]\n",
    "'",
    "\"\"\"",
];

/// One mutated input: random bytes (1 in 8), else a seed with a few
/// byte-, integer-, token- and splice-level mutations.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.chance(8) {
        let max = if rng.chance(4) { 4096 } else { 128 };
        let len = rng.below(max);
        return (0..len).map(|_| rng.byte()).collect();
    }
    let mut v = seeds[rng.below(seeds.len())].clone();
    let rounds = if rng.chance(4) {
        1 + rng.below(16)
    } else {
        1 + rng.below(3)
    };
    for _ in 0..rounds {
        mutate_once(rng, &mut v, seeds);
        v.truncate(MAX_LEN);
    }
    v
}

fn mutate_once(rng: &mut Rng, v: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let pos = |rng: &mut Rng, v: &Vec<u8>| rng.below(v.len() + 1);
    match rng.below(12) {
        // flip a bit
        0 if !v.is_empty() => {
            let i = rng.below(v.len());
            v[i] ^= 1 << rng.below(8);
        }
        // a random byte
        1 if !v.is_empty() => {
            let i = rng.below(v.len());
            v[i] = rng.byte();
        }
        // insert random bytes
        2 => {
            let at = pos(rng, v);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            v.splice(at..at, bytes);
        }
        // delete a range
        3 if !v.is_empty() => {
            let at = rng.below(v.len());
            let n = 1 + rng.below((v.len() - at).min(64));
            v.drain(at..at + n);
        }
        // duplicate a range somewhere else
        4 if !v.is_empty() => {
            let at = rng.below(v.len());
            let n = 1 + rng.below((v.len() - at).min(256));
            let chunk = v[at..at + n].to_vec();
            let to = pos(rng, v);
            v.splice(to..to, chunk);
        }
        // truncate
        5 => {
            let at = pos(rng, v);
            v.truncate(at);
        }
        // an interesting integer, 1/2/4/8 bytes, little or big endian
        6 | 7 if !v.is_empty() => {
            let x = INTERESTING[rng.below(INTERESTING.len())];
            let width = 1 << rng.below(4);
            let bytes = if rng.chance(2) {
                x.to_le_bytes()[..width].to_vec()
            } else {
                x.to_be_bytes()[8 - width..].to_vec()
            };
            let at = rng.below(v.len());
            for (i, b) in bytes.into_iter().enumerate() {
                if let Some(slot) = v.get_mut(at + i) {
                    *slot = b;
                }
            }
        }
        // replace a number (a run of digits) with a token
        8 | 9 => {
            let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
            let digits: Vec<usize> = (0..v.len()).filter(|&i| v[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                let at = pos(rng, v);
                v.splice(at..at, token.iter().copied());
            } else {
                let start = digits[rng.below(digits.len())];
                let mut end = start;
                while end < v.len() && (v[end].is_ascii_digit() || b".eE-+".contains(&v[end])) {
                    end += 1;
                }
                v.splice(start..end, token.iter().copied());
            }
        }
        // deep nesting
        10 => {
            let at = pos(rng, v);
            let open = [b'[', b'{', b'"'][rng.below(3)];
            let n = 1 + rng.below(2000);
            v.splice(at..at, std::iter::repeat_n(open, n));
        }
        // splice in the tail of another seed
        _ => {
            let other = &seeds[rng.below(seeds.len())];
            let at = pos(rng, v);
            let from = rng.below(other.len() + 1);
            v.truncate(at);
            v.extend_from_slice(&other[from..]);
        }
    }
}

/// A temporary folder for the files a loader reads, in memory where the
/// system has `/dev/shm` (rewriting a file a million times on a disk
/// filesystem waits on the disk).
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new().prefix("lmzh-fuzz").tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Saves an input that made a loader panic; returns where.
fn save_failure(name: &str, case: u64, input: &[u8]) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
    let path = dir.join(format!("{name}-case-{case}.bin"));
    match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, input)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not saved: {e})"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let text: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    text.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

/// FNV-1a of the loader's name: its default seed.
fn default_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs `target` on every seed, then on [`cases`] mutated inputs; `target`
/// returns whether the loader accepted the input (an error is fine; a panic
/// is not). Panics at the end with every input that panicked (up to five),
/// in hex.
pub fn fuzz(name: &'static str, seeds: &[Vec<u8>], mut target: impl FnMut(&[u8]) -> bool) {
    if let Ok(input) = std::env::var("LMZH_FUZZ_INPUT") {
        let input = match std::fs::read(&input) {
            Ok(bytes) => bytes,
            Err(_) if input.bytes().all(|b| b.is_ascii_hexdigit()) => unhex(&input),
            Err(e) => panic!("LMZH_FUZZ_INPUT={input}: {e} (give an absolute path or hex)"),
        };
        let accepted = target(&input);
        println!(
            "fuzz {name}: replayed {} bytes, accepted: {accepted}",
            input.len()
        );
        return;
    }
    install_panic_hook();
    let total = cases();
    let seed = std::env::var("LMZH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| default_seed(name));
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut run_one = |case: u64, input: &[u8]| -> Result<bool, String> {
        CURRENT.with(|c| c.set((name, case, input.as_ptr(), input.len())));
        FUZZING.with(|f| f.set(true));
        let result = panic::catch_unwind(AssertUnwindSafe(|| target(input)));
        FUZZING.with(|f| f.set(false));
        CURRENT.with(|c| c.set((name, case, std::ptr::null(), 0)));
        result.map_err(|_| {
            let msg = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            let shown = &input[..input.len().min(256)];
            format!(
                "case {case}: panicked: {msg}\n  input ({} bytes, saved as {}): {}{}",
                input.len(),
                save_failure(name, case, input),
                hex(shown),
                if shown.len() < input.len() { "..." } else { "" }
            )
        })
    };
    let (mut accepted, mut panicked, mut panics) = (0u64, 0u64, Vec::new());
    let mut count = |r: Result<bool, String>| match r {
        Ok(ok) => accepted += u64::from(ok),
        Err(report) => {
            panicked += 1;
            if panics.len() < 5 {
                panics.push(report);
            }
        }
    };
    for (i, s) in seeds.iter().enumerate() {
        count(run_one(i as u64, s));
    }
    for case in 0..total {
        let input = mutate(&mut rng, seeds);
        count(run_one(seeds.len() as u64 + case, &input));
    }
    let n = seeds.len() as u64 + total;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {n} inputs ({accepted} accepted, {} rejected) in {secs:.1} s \
         ({:.0}/s), seed {seed}, {panicked} panics",
        n - accepted - panicked,
        n as f64 / secs.max(1e-9),
    );
    // Unbuffered: `cargo xtask fuzz` reads the counts from here.
    let _ = std::io::stdout().flush();
    assert!(
        panics.is_empty(),
        "fuzz {name}: {panicked} input(s) panicked (replay one with \
         LMZH_FUZZ_INPUT=FILE):\n{}",
        panics.join("\n")
    );
}

#[cfg(test)]
mod harness_tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_mutation_is_deterministic() {
        assert_eq!(unhex(&hex(&[0, 1, 0xab, 0xff])), [0, 1, 0xab, 0xff]);
        let seeds = vec![b"{\"a\": 12, \"b\": [1.5]}".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..200)
                .map(|_| mutate(&mut rng, &seeds))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert!(run(7).iter().all(|v| v.len() <= MAX_LEN));
        assert!(run(7).iter().any(|v| v != &seeds[0]));
    }
}
