//! Storage-layout benchmark for sled 0.34.7: one Tree per group vs one shared,
//! group-prefixed "messages" tree.
//!
//! Usage:
//!   layout_bench --mode per-tree|prefixed --groups N --messages M --dir PATH
//!                [--phase all|load|reopen|extra] [--extra K] [--cache-mib C] [--flush-every N]
//!
//! `--phase all` (default) runs `load`, `reopen` and `extra` each in a fresh child
//! process (re-executing this binary), so every phase's peak RSS (VmHWM) is its own.
//! `--dir` must not exist (load creates it); it is left in place for the caller to delete.
//!
//! Depends only on sled, bincode 1.3.3, serde (derive) and std.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

const FORMAT_VERSION: u8 = 1;
const MEMBERS_PER_GROUP: u32 = 20;
const BODY_LEN: usize = 200;

#[derive(Serialize, Deserialize)]
struct Msg {
    from: String,
    client_id: String,
    ts: u64,
    body: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    PerTree,
    Prefixed,
}

struct Args {
    mode: Mode,
    groups: u32,
    messages: u64,
    dir: PathBuf,
    phase: String,
    extra: u64,
    cache_mib: u64,
    flush_every: u64, // group commit: one db.flush() per N inserts (default 100)
}

fn parse_args() -> Args {
    let mut mode = None;
    let (mut groups, mut messages, mut dir) = (1000u32, 100u64, None);
    let (mut phase, mut extra, mut cache_mib) = ("all".to_string(), 10u64, 64u64);
    let mut flush_every = 100u64;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_else(|| usage(&argv[i]));
        match argv[i].as_str() {
            "--mode" => {
                mode = Some(match v.as_str() {
                    "per-tree" => Mode::PerTree,
                    "prefixed" => Mode::Prefixed,
                    _ => usage("--mode"),
                })
            }
            "--groups" => groups = v.parse().unwrap_or_else(|_| usage("--groups")),
            "--messages" => messages = v.parse().unwrap_or_else(|_| usage("--messages")),
            "--dir" => dir = Some(PathBuf::from(v)),
            "--phase" => phase = v,
            "--extra" => extra = v.parse().unwrap_or_else(|_| usage("--extra")),
            "--cache-mib" => cache_mib = v.parse().unwrap_or_else(|_| usage("--cache-mib")),
            "--flush-every" => flush_every = v.parse().unwrap_or_else(|_| usage("--flush-every")),
            other => usage(other),
        }
        i += 2;
    }
    Args {
        mode: mode.unwrap_or_else(|| usage("--mode")),
        groups,
        messages,
        dir: dir.unwrap_or_else(|| usage("--dir")),
        phase,
        extra,
        cache_mib,
        flush_every: flush_every.max(1),
    }
}

fn usage(bad: &str) -> ! {
    eprintln!(
        "bad or missing argument near {bad}\nusage: layout_bench --mode per-tree|prefixed \
         --groups N --messages M --dir PATH [--phase all|load|reopen|extra] [--extra K] [--cache-mib C] [--flush-every N]"
    );
    std::process::exit(2)
}

// ---------- keys and values ----------

fn gid(g: u32) -> String {
    format!("group-{:04}", g + 1)
}

fn group_prefix(gid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + gid.len() + 8);
    k.push(gid.len() as u8);
    k.extend_from_slice(gid.as_bytes());
    k
}

fn prefixed_key(gid: &str, seq: u64) -> Vec<u8> {
    let mut k = group_prefix(gid);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn member_key(gid: &str, uid: &str) -> Vec<u8> {
    let mut k = group_prefix(gid);
    k.extend_from_slice(uid.as_bytes());
    k
}

fn member_val(delivered: u64, read: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&delivered.to_be_bytes());
    v[8..].copy_from_slice(&read.to_be_bytes());
    v
}

/// Deterministic pseudo-random text so values are not trivially repetitive.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn text(&mut self, n: usize) -> String {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
        (0..n)
            .map(|_| A[(self.next() % A.len() as u64) as usize] as char)
            .collect()
    }
}

fn encode(rng: &mut Rng, g: u32, seq: u64) -> Vec<u8> {
    let m = Msg {
        from: format!("u{:02}-{:04}", seq % MEMBERS_PER_GROUP as u64, g % 10000), // 8 chars
        client_id: format!("{:016x}", rng.next()),                                // 16 chars
        ts: 1_700_000_000_000 + seq,
        body: rng.text(BODY_LEN),
    };
    let mut v = vec![FORMAT_VERSION];
    v.extend_from_slice(&bincode::serialize(&m).expect("bincode"));
    v
}

// ---------- measurement helpers ----------

fn proc_status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// (apparent bytes like `du -sb`, allocated bytes like `du -s --block-size=1`, file count)
fn dir_size(p: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut bytes, mut alloc, mut files) = (0, 0, 0);
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                let (b, a, f) = dir_size(&e.path());
                bytes += b;
                alloc += a;
                files += f;
            } else {
                bytes += md.len();
                alloc += md.blocks() * 512;
                files += 1;
            }
        }
    }
    (bytes, alloc, files)
}

fn open(a: &Args) -> sled::Db {
    sled::Config::new()
        .path(&a.dir)
        .cache_capacity(a.cache_mib * 1024 * 1024)
        .open()
        .expect("open sled")
}

fn report(a: &Args, phase: &str, kv: &[(&str, String)]) {
    let mode = if a.mode == Mode::PerTree {
        "per-tree"
    } else {
        "prefixed"
    };
    let mut line = format!(
        "RESULT phase={phase} mode={mode} groups={} messages={}",
        a.groups, a.messages
    );
    for (k, v) in kv {
        line.push_str(&format!(" {k}={v}"));
    }
    line.push_str(&format!(
        " vm_hwm_kib={} vm_rss_kib={}",
        proc_status_kib("VmHWM:"),
        proc_status_kib("VmRSS:")
    ));
    println!("{line}");
}

// ---------- workload ----------

/// Insert `count` messages per group, seqs start_seq..start_seq+count, round-robin
/// across groups; flush every `a.flush_every` inserts; update all member cursors
/// `cursor_updates` times, evenly spread. Returns number of flushes.
fn insert_round_robin(
    a: &Args,
    db: &sled::Db,
    start_seq: u64,
    count: u64,
    cursor_updates: u64,
) -> u64 {
    let gids: Vec<String> = (0..a.groups).map(gid).collect();
    let trees: Vec<sled::Tree> = match a.mode {
        Mode::PerTree => gids.iter().map(|g| db.open_tree(g).unwrap()).collect(),
        Mode::Prefixed => vec![db.open_tree("messages").unwrap()],
    };
    let members = db.open_tree("members").unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ start_seq);
    let (mut inserts, mut flushes) = (0u64, 0u64);
    let update_every = count
        .checked_div(cursor_updates)
        .map_or(u64::MAX, |n| n.max(1));
    for i in 0..count {
        let seq = start_seq + i;
        for (g, id) in gids.iter().enumerate() {
            let v = encode(&mut rng, g as u32, seq);
            match a.mode {
                Mode::PerTree => trees[g].insert(seq.to_be_bytes(), v).unwrap(),
                Mode::Prefixed => trees[0].insert(prefixed_key(id, seq), v).unwrap(),
            };
            inserts += 1;
            if inserts % a.flush_every == 0 {
                db.flush().unwrap();
                flushes += 1;
            }
        }
        if (i + 1) % update_every == 0 {
            // every member of every group advances its delivered/read cursors
            for id in &gids {
                for u in 0..MEMBERS_PER_GROUP {
                    let uid = format!("user-{u:02}");
                    members
                        .insert(
                            member_key(id, &uid),
                            &member_val(seq, seq.saturating_sub(3)),
                        )
                        .unwrap();
                }
            }
        }
    }
    db.flush().unwrap();
    flushes + 1
}

fn phase_load(a: &Args) {
    if a.dir.exists() {
        eprintln!("--dir {} already exists; use a fresh path", a.dir.display());
        std::process::exit(2);
    }
    let t0 = Instant::now();
    let db = open(a);
    // initial membership: 20 members per group, cursors at 0
    let members = db.open_tree("members").unwrap();
    for g in 0..a.groups {
        let id = gid(g);
        for u in 0..MEMBERS_PER_GROUP {
            members
                .insert(member_key(&id, &format!("user-{u:02}")), &member_val(0, 0))
                .unwrap();
        }
    }
    let flushes = insert_round_robin(a, &db, 1, a.messages, 4);
    let load_s = t0.elapsed().as_secs_f64();
    let sled_size = db.size_on_disk().unwrap_or(0);
    let (b_open, al_open, _) = dir_size(&a.dir);
    let hwm_before_drop = proc_status_kib("VmHWM:");
    drop(db);
    let (bytes, alloc, files) = dir_size(&a.dir);
    let total = a.groups as u64 * a.messages;
    report(
        a,
        "load",
        &[
            ("total_msgs", total.to_string()),
            ("flushes", flushes.to_string()),
            ("load_s", format!("{load_s:.2}")),
            ("msgs_per_s", format!("{:.0}", total as f64 / load_s)),
            ("hwm_before_drop_kib", hwm_before_drop.to_string()),
            ("sled_size_on_disk", sled_size.to_string()),
            ("disk_bytes_while_open", b_open.to_string()),
            ("disk_alloc_while_open", al_open.to_string()),
            ("disk_bytes", bytes.to_string()),
            ("disk_alloc_bytes", alloc.to_string()),
            ("files", files.to_string()),
            (
                "bytes_per_msg",
                format!("{:.0}", bytes as f64 / total as f64),
            ),
        ],
    );
}

fn phase_reopen(a: &Args) {
    let rss0 = proc_status_kib("VmRSS:");
    let t0 = Instant::now();
    let db = open(a);
    let open_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let members = db.open_tree("members").unwrap();
    let messages = if a.mode == Mode::Prefixed {
        Some(db.open_tree("messages").unwrap())
    } else {
        None
    };
    let (mut found, mut seq_sum, mut member_rows) = (0u64, 0u64, 0u64);
    for g in 0..a.groups {
        // "lazy start" of one group actor: find last seq + load member cursors
        let id = gid(g);
        let last = match &messages {
            None => db.open_tree(&id).unwrap().last().unwrap().map(|(k, _)| k),
            Some(t) => t
                .scan_prefix(group_prefix(&id))
                .next_back()
                .map(|r| r.unwrap().0),
        };
        if let Some(k) = last {
            let s = &k[k.len() - 8..];
            seq_sum += u64::from_be_bytes(s.try_into().unwrap());
            found += 1;
        }
        member_rows += members.scan_prefix(group_prefix(&id)).count() as u64;
    }
    let scan_s = t1.elapsed().as_secs_f64();
    drop(db);
    report(
        a,
        "reopen",
        &[
            ("open_s", format!("{open_s:.3}")),
            ("scan_s", format!("{scan_s:.3}")),
            ("groups_found", found.to_string()),
            (
                "avg_last_seq",
                format!("{:.1}", seq_sum as f64 / found.max(1) as f64),
            ),
            ("member_rows", member_rows.to_string()),
            ("rss_before_open_kib", rss0.to_string()),
        ],
    );
}

fn phase_extra(a: &Args) {
    let (b0, _, _) = dir_size(&a.dir);
    let t0 = Instant::now();
    let db = open(a);
    let flushes = insert_round_robin(a, &db, a.messages + 1, a.extra, 1);
    let s = t0.elapsed().as_secs_f64();
    drop(db);
    let (bytes, alloc, files) = dir_size(&a.dir);
    let total = a.groups as u64 * (a.messages + a.extra);
    report(
        a,
        "extra",
        &[
            ("extra_per_group", a.extra.to_string()),
            ("flushes", flushes.to_string()),
            ("extra_s", format!("{s:.2}")),
            ("disk_bytes_before", b0.to_string()),
            ("disk_bytes", bytes.to_string()),
            ("disk_alloc_bytes", alloc.to_string()),
            ("files", files.to_string()),
            (
                "bytes_per_msg",
                format!("{:.0}", bytes as f64 / total as f64),
            ),
        ],
    );
}

fn main() {
    let a = parse_args();
    match a.phase.as_str() {
        "load" => phase_load(&a),
        "reopen" => phase_reopen(&a),
        "extra" => phase_extra(&a),
        "all" => {
            // each phase in its own process so VmHWM is per phase
            let exe = std::env::current_exe().unwrap();
            let args: Vec<String> = std::env::args().skip(1).collect();
            for p in ["load", "reopen", "extra"] {
                let mut cmd_args = args.clone();
                cmd_args.extend(["--phase".to_string(), p.to_string()]);
                let st = std::process::Command::new(&exe)
                    .args(&cmd_args)
                    .status()
                    .unwrap();
                if !st.success() {
                    eprintln!("phase {p} failed: {st}");
                    std::process::exit(1);
                }
            }
        }
        other => usage(other),
    }
}
