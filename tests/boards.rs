//! One board table (`shared::board`), and everything that cannot read it
//! held to it: the linker scripts, the QEMU runner script, the size script,
//! the firmware's build script, cargo config and features. (The firmware's
//! board modules and `host flash` read the table itself.) Change a board in
//! the table and this test names every file that still says otherwise.

use shared::board::{Board, Region, BOARDS};
use std::collections::BTreeMap;
use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `0x1000`, `4096`, `512K`, `3M` as in a linker script.
fn number(s: &str) -> u64 {
    let s = s.trim();
    let (digits, scale) = match s.as_bytes().last() {
        Some(b'K') => (&s[..s.len() - 1], 1 << 10),
        Some(b'M') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    let v = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => digits.replace('_', "").parse(),
    };
    v.unwrap_or_else(|e| panic!("not a number: {s:?} ({e})")) * scale
}

/// The `MEMORY` regions and `REGION_ALIAS`es of a linker script.
fn linker_regions(script: &str) -> (BTreeMap<String, (u64, u64)>, BTreeMap<String, String>) {
    let mut regions = BTreeMap::new();
    let mut aliases = BTreeMap::new();
    for line in script.lines().map(str::trim) {
        if let Some((name, rest)) = line.split_once(':') {
            if let Some(rest) = rest.trim().strip_prefix("ORIGIN =") {
                let (origin, length) = rest.split_once(", LENGTH =").unwrap_or_else(|| panic!("region line {line:?}"));
                regions.insert(name.trim().to_string(), (number(origin), number(length)));
            }
        }
        if let Some(rest) = line.strip_prefix("REGION_ALIAS(") {
            let inner = rest.trim_end_matches(';').trim_end_matches(')');
            let (alias, target) = inner.split_once(',').unwrap_or_else(|| panic!("alias line {line:?}"));
            aliases.insert(alias.trim().trim_matches('"').to_string(), target.trim().to_string());
        }
    }
    (regions, aliases)
}

fn region(r: Region) -> (u64, u64) {
    (r.origin as u64, r.length as u64)
}

#[test]
fn linker_scripts_have_the_tables_memory_map() {
    for b in BOARDS {
        let file = format!("firmware/memory/{}.x", b.name);
        let (regions, aliases) = linker_regions(&read(&file));
        for (name, want) in [("FLASH", b.flash), ("RAM", b.ram), ("MODEL", b.model)] {
            assert_eq!(regions.get(name), Some(&region(want)), "{file}: region {name} differs from shared::board");
        }
        let arena = match aliases.get("ARENA") {
            Some(target) => regions.get(target).copied(),
            None => regions.get("ARENA").copied(),
        };
        assert_eq!(arena, Some(region(b.arena_region)), "{file}: the ARENA region differs from shared::board");
        let mut names: Vec<_> = regions.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut want = vec!["FLASH", "MODEL", "RAM"];
        if !aliases.contains_key("ARENA") {
            want.push("ARENA");
        }
        want.sort_unstable();
        assert_eq!(names, want, "{file}: regions the table does not know");
        // The symbols main.rs reads the regions through.
        let script = read(&file);
        for (sym, expr) in [("_model_start", "ORIGIN(MODEL)"), ("_model_end", "ORIGIN(MODEL) + LENGTH(MODEL)")] {
            let line = format!("{sym} = {expr};");
            assert!(script.lines().any(|l| l.trim() == line), "{file}: lacks `{line}`");
        }
    }
}

/// `name) machine=...; cpu=...; model_addr=...; features=... ;;` lines.
fn runner_cases(script: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut cases = BTreeMap::new();
    for line in script.lines().map(str::trim) {
        let Some((name, rest)) = line.split_once(')') else { continue };
        if !rest.contains("machine=") {
            continue;
        }
        let vars = rest
            .trim_end_matches(";;")
            .split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cases.insert(name.trim().to_string(), vars);
    }
    cases
}

#[test]
fn the_runner_script_starts_the_tables_machines_at_its_addresses() {
    let cases = runner_cases(&read("scripts/qemu-run.sh"));
    let names: Vec<_> = cases.keys().map(String::as_str).collect();
    let mut want: Vec<_> = BOARDS.iter().filter(|b| b.qemu.is_some()).map(|b| b.name).collect();
    want.sort_unstable();
    assert_eq!(names, want, "scripts/qemu-run.sh: its boards differ from the QEMU boards of shared::board::BOARDS");
    for b in BOARDS {
        let Some(qemu) = b.qemu else { continue };
        let vars = &cases[b.name];
        let get = |k: &str| vars.get(k).unwrap_or_else(|| panic!("scripts/qemu-run.sh {}: no {k}=", b.name)).as_str();
        assert_eq!(get("machine"), qemu.machine, "scripts/qemu-run.sh {}: machine", b.name);
        assert_eq!(get("cpu"), qemu.cpu, "scripts/qemu-run.sh {}: cpu", b.name);
        assert_eq!(number(get("model_addr")), b.model.origin as u64, "scripts/qemu-run.sh {}: model_addr", b.name);
    }
}

#[test]
fn the_firmwares_build_files_pair_each_board_with_its_target() {
    let pairs = |b: &Board| format!("{}:{}", b.name, b.target);
    let size = read("scripts/qemu-size.sh");
    let line = size.lines().find(|l| l.trim_start().starts_with("for pair in")).expect("qemu-size.sh: the board loop");
    let listed: Vec<_> = line.split_whitespace().filter(|w| w.contains(':')).map(|w| w.trim_end_matches(';')).collect();
    assert_eq!(listed, BOARDS.iter().map(pairs).collect::<Vec<_>>(), "scripts/qemu-size.sh: board:target pairs");

    let build = read("firmware/build.rs");
    let cargo = read("firmware/Cargo.toml");
    let config = read("firmware/.cargo/config.toml");
    for b in BOARDS {
        let row = format!("(\"{0}\", \"memory/{0}.x\", \"{1}\"),", b.name, b.target);
        assert!(build.lines().any(|l| l.trim() == row), "firmware/build.rs: lacks `{row}`");
        let feature = format!("{} = [", b.name);
        assert!(
            cargo.lines().any(|l| l.starts_with(&feature)),
            "firmware/Cargo.toml: lacks the feature `{} = [...]`",
            b.name
        );
        let section = format!("[target.{}]", b.target);
        let runner = config
            .lines()
            .skip_while(|l| l.trim() != section)
            .find(|l| l.starts_with("runner"))
            .unwrap_or_else(|| panic!("firmware/.cargo/config.toml: no runner under {section}"));
        // One runner per target: it starts one of the target's boards in QEMU.
        let starts = |o: &Board| o.target == b.target && runner.contains(&format!("\"{}\"", o.name));
        assert!(BOARDS.iter().any(starts), "firmware/.cargo/config.toml: {runner}");
        let features = format!("--features {}", b.name);
        let aliases: Vec<_> = config.lines().filter(|l| l.contains(&features)).collect();
        assert!(!aliases.is_empty(), "firmware/.cargo/config.toml: no alias builds {}", b.name);
        for alias in aliases {
            assert!(alias.contains(&format!("--target {} ", b.target)), "firmware/.cargo/config.toml: {alias}");
        }
    }
}

/// `host flash --board` offers exactly the table's boards, with its addresses.
#[test]
fn host_flash_boards_are_the_tables() {
    use host::flash::Board as HostBoard;
    let names: Vec<_> = HostBoard::ALL.iter().map(|b| b.name()).collect();
    assert_eq!(names, BOARDS.iter().map(|b| b.name).collect::<Vec<_>>());
    for (h, b) in HostBoard::ALL.into_iter().zip(BOARDS) {
        assert_eq!(h.machine(), b.qemu.map(|q| (q.machine, q.cpu)));
        assert_eq!((h.model_addr(), h.model_capacity()), (b.model.origin, b.model.length as u64));
        assert_eq!(h.target(), b.target);
    }
}

/// The stack region of memory/stack.x is the table's `STACK_BYTES`, and
/// every board's RAM holds its stack, static data and (where the arena
/// shares the RAM) its static arena: what `host flash` checks a model
/// against is what the linker places.
#[test]
fn the_stack_region_and_the_ram_budget_match_the_table() {
    let script = read("firmware/memory/stack.x");
    let size = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("_stack_size ="))
        .unwrap_or_else(|| panic!("no _stack_size in firmware/memory/stack.x"));
    assert_eq!(number(size.trim_end_matches(';')), shared::board::STACK_BYTES as u64, "firmware/memory/stack.x");
    for b in BOARDS {
        let full = b.ram_use(b.arena_bytes as u64);
        assert!(full.fits(), "{}: its own static arena does not fit its RAM: {full}", b.name);
        assert!(!b.ram_use(b.arena_bytes as u64 + 1).fits(), "{}: an arena past its capacity fits", b.name);
    }
}
