// Test oracle: the reference's decode and stat-parse semantics (boxlite 0.9.6, pid_file.rs), and
// the newest boxlite's ShimPidRecord decode (commit 2714f17: line 3 "services-mux-v1" means the
// shim has runtime port control), run by the tests to check both Python backends against real
// Rust behaviour. Protocol, one request per line on stdin, one answer per line on stdout:
//   d <hex>  ->  "ok <pid> <start|->" | "err utf8 <valid_up_to>" | "err pid <ParseIntError>"
//   c <hex>  ->  "ok <pid> <start|-> <0|1>" (newest boxlite: ... and the capability) | "err ..."
//   s <hex>  ->  "<start>" | "-"
use std::io::{self, BufRead, Write};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn decode(bytes: &[u8]) -> String {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return format!("err utf8 {}", e.valid_up_to()),
    };
    let mut lines = text.lines();
    let pid_line = lines.next().unwrap_or("").trim();
    let pid: u32 = match pid_line.parse() {
        Ok(p) => p,
        Err(e) => return format!("err pid {}", e),
    };
    let start_time = lines
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse::<u64>().ok());
    match start_time {
        Some(s) => format!("ok {} {}", pid, s),
        None => format!("ok {} -", pid),
    }
}

// ShimPidRecord::decode (newest boxlite): the record as 0.9.6 decodes it, then line 3, trimmed,
// equal to the runtime-port-control token.
fn decode_shim(bytes: &[u8]) -> String {
    let identity = decode(bytes);
    if !identity.starts_with("ok ") {
        return identity;
    }
    let text = std::str::from_utf8(bytes).unwrap(); // decode() has checked it
    let control = text
        .lines()
        .nth(2)
        .is_some_and(|line| line.trim() == "services-mux-v1");
    format!("{} {}", identity, control as u8)
}

fn parse_start_time_from_stat(slice: &[u8]) -> Option<u64> {
    let close = slice.iter().rposition(|&b| b == b')')?;
    let tail = &slice[close + 1..];
    let mut field_idx = 0usize;
    let mut i = 0;
    while i < tail.len() {
        while i < tail.len() && tail[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < tail.len() && tail[i] != b' ' && tail[i] != b'\n' {
            i += 1;
        }
        if start == i {
            return None;
        }
        field_idx += 1;
        if field_idx == 20 {
            let mut value: u64 = 0;
            for &b in &tail[start..i] {
                if !b.is_ascii_digit() {
                    return None;
                }
                value = value.checked_mul(10)?.checked_add((b - b'0') as u64)?;
            }
            return Some(value);
        }
    }
    None
}

fn main() {
    let stdin = io::stdin();
    let mut out = io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let (kind, hex) = line.split_at(1);
        let bytes = unhex(hex.trim());
        let answer = match kind {
            "d" => decode(&bytes),
            "c" => decode_shim(&bytes),
            "s" => match parse_start_time_from_stat(&bytes) {
                Some(v) => v.to_string(),
                None => "-".to_string(),
            },
            _ => panic!("unknown request {line}"),
        };
        writeln!(out, "{answer}").unwrap();
        out.flush().unwrap();
    }
}
