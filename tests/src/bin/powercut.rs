//! `shared-f2b-powercut BACKING MOUNT`: mounts the power-cut file system
//! ([`shared_f2b_tests::powercut`]) over BACKING at MOUNT. Each line `cut` on standard input
//! drops what was not synced and answers `cut <files>`; `sync` makes everything written so far
//! durable (the kernel's writeback) and answers `sync <files>`; end of input unmounts.

use shared_f2b_tests::powercut::fs::{PowerCutFs, State};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(backing), Some(mount)) = (args.next(), args.next()) else {
        eprintln!("usage: shared-f2b-powercut BACKING MOUNT");
        std::process::exit(2);
    };
    let state = Arc::new(Mutex::new(State::default()));
    let options = [
        fuser::MountOption::FSName("powercut".into()),
        fuser::MountOption::AllowOther,
        fuser::MountOption::AutoUnmount,
    ];
    let session = fuser::spawn_mount2(PowerCutFs::new(&backing, state.clone()), &mount, &options)?;
    println!("mounted");
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "cut" => println!("cut {}", state.lock().expect("not poisoned").cut()?),
            "sync" => println!("sync {}", state.lock().expect("not poisoned").sync_all()),
            _ => continue,
        }
        std::io::stdout().flush()?;
    }
    drop(session);
    Ok(())
}
