//! The file system itself: every operation passed through to a backing directory, and, for
//! each file written since its last `fsync`/`fdatasync`, its content as of then kept in
//! memory. A cut puts those contents back: what was not synced is gone, as after a power
//! failure with a volatile write cache (LazyFS's model, for file data). Metadata operations
//! (create, rename, unlink, mkdir) are durable at once; a file created and written but never
//! synced comes back empty.

use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, consts,
};
use libc::{EIO, ENOENT};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Attributes are never cached by the kernel: after a cut, sizes change under it.
const TTL: Duration = Duration::ZERO;

/// What the file system and the cut share.
#[derive(Default)]
pub struct State {
    /// Inode → its path in the backing directory.
    paths: HashMap<u64, PathBuf>,
    /// Open file handles.
    files: HashMap<u64, File>,
    next_fh: u64,
    /// Inode → its content at its last sync, for files written since.
    synced: HashMap<u64, Vec<u8>>,
}

impl State {
    /// Puts every file written since its last sync back as it was then; how many files.
    pub fn cut(&mut self) -> io::Result<usize> {
        let images = std::mem::take(&mut self.synced);
        for (ino, bytes) in &images {
            if let Some(path) = self.paths.get(ino)
                && path.exists()
            {
                fs::write(path, bytes)?;
            }
        }
        self.files.clear();
        Ok(images.len())
    }

    /// Everything written so far reaches the disk (as the kernel's writeback does within
    /// half a minute); how many files were waiting.
    pub fn sync_all(&mut self) -> usize {
        let n = self.synced.len();
        self.synced.clear();
        n
    }

    /// Keeps `ino`'s content as it is now, unless it is kept already (written since its sync).
    fn before_change(&mut self, ino: u64) -> io::Result<()> {
        if self.synced.contains_key(&ino) {
            return Ok(());
        }
        let Some(path) = self.paths.get(&ino) else {
            return Ok(());
        };
        let bytes = fs::read(path)?;
        self.synced.insert(ino, bytes);
        Ok(())
    }
}

/// The file system over `backing`.
pub struct PowerCutFs {
    state: Arc<Mutex<State>>,
}

impl PowerCutFs {
    pub fn new(backing: &Path, state: Arc<Mutex<State>>) -> PowerCutFs {
        state
            .lock()
            .expect("not poisoned")
            .paths
            .insert(fuser::FUSE_ROOT_ID, backing.to_path_buf());
        PowerCutFs { state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    fn path(&self, ino: u64) -> Option<PathBuf> {
        self.state().paths.get(&ino).cloned()
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        self.path(parent).map(|p| p.join(name))
    }

    /// The attributes of `path`, learning its inode.
    fn attr(&self, path: &Path) -> io::Result<FileAttr> {
        let meta = fs::symlink_metadata(path)?;
        let ino = if self.path(fuser::FUSE_ROOT_ID).as_deref() == Some(path) {
            fuser::FUSE_ROOT_ID
        } else {
            meta.ino()
        };
        self.state().paths.insert(ino, path.to_path_buf());
        Ok(attr_of(ino, &meta))
    }

    fn open_file(&self, path: &Path, flags: i32) -> io::Result<u64> {
        let acc = flags & libc::O_ACCMODE;
        let file = OpenOptions::new()
            .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
            .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
            .custom_flags(flags & libc::O_APPEND)
            .open(path)?;
        let mut state = self.state();
        state.next_fh += 1;
        let fh = state.next_fh;
        state.files.insert(fh, file);
        Ok(fh)
    }
}

fn attr_of(ino: u64, meta: &fs::Metadata) -> FileAttr {
    let kind = if meta.is_dir() {
        FileType::Directory
    } else if meta.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    let time = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32);
    FileAttr {
        ino,
        size: meta.len(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: time(meta.ctime(), meta.ctime_nsec()),
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(EIO)
}

impl Filesystem for PowerCutFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let Some(path) = self.child(parent, name) else {
            return reply.error(ENOENT);
        };
        match self.attr(&path) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let Some(path) = self.path(ino) else {
            return reply.error(ENOENT);
        };
        match self.attr(&path) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let Some(path) = self.path(ino) else {
            return reply.error(ENOENT);
        };
        let done = (|| {
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if let Some(size) = size {
                self.state().before_change(ino)?;
                OpenOptions::new().write(true).open(&path)?.set_len(size)?;
            }
            self.attr(&path)
        })();
        match done {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(path) = self.child(parent, name) else {
            return reply.error(ENOENT);
        };
        let done = fs::create_dir(&path)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777)))
            .and_then(|()| self.attr(&path));
        match done {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let Some(path) = self.child(parent, name) else {
            return reply.error(ENOENT);
        };
        let ino = fs::symlink_metadata(&path).map(|m| m.ino()).ok();
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(ino) = ino {
                    let mut state = self.state();
                    state.synced.remove(&ino);
                    state.paths.remove(&ino);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let Some(path) = self.child(parent, name) else {
            return reply.error(ENOENT);
        };
        match fs::remove_dir(&path) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        let (Some(from), Some(to)) = (self.child(parent, name), self.child(newparent, newname))
        else {
            return reply.error(ENOENT);
        };
        let replaced = fs::symlink_metadata(&to).map(|m| m.ino()).ok();
        match fs::rename(&from, &to) {
            Ok(()) => {
                let mut state = self.state();
                if let Some(ino) = replaced {
                    state.synced.remove(&ino);
                    state.paths.remove(&ino);
                }
                for path in state.paths.values_mut() {
                    if let Ok(rest) = path.strip_prefix(&from) {
                        *path = if rest.as_os_str().is_empty() {
                            to.clone()
                        } else {
                            to.join(rest)
                        };
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let Some(path) = self.path(ino) else {
            return reply.error(ENOENT);
        };
        if flags & libc::O_TRUNC != 0
            && let Err(e) = self.state().before_change(ino)
        {
            return reply.error(errno(&e));
        }
        match self.open_file(&path, flags) {
            Ok(fh) => {
                if flags & libc::O_TRUNC != 0 {
                    let _ = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(0));
                }
                reply.opened(fh, consts::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(path) = self.child(parent, name) else {
            return reply.error(ENOENT);
        };
        let existed = path.exists();
        let done = (|| {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(mode & 0o7777)
                .open(&path)?;
            let attr = self.attr(&path)?;
            if !existed {
                // Created since any sync: its data comes back empty after a cut.
                self.state().synced.insert(attr.ino, Vec::new());
            }
            let fh = self.open_file(&path, flags & !libc::O_CREAT & !libc::O_EXCL)?;
            Ok::<_, io::Error>((attr, fh))
        })();
        match done {
            Ok((attr, fh)) => reply.created(&TTL, &attr, 0, fh, consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let state = self.state();
        let Some(file) = state.files.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let mut buf = vec![0; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset as u64 + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        if let Err(e) = state.before_change(ino) {
            return reply.error(errno(&e));
        }
        let Some(file) = state.files.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let at = if flags & libc::O_APPEND != 0 {
            file.metadata().map(|m| m.len()).unwrap_or(offset as u64)
        } else {
            offset as u64
        };
        match file.write_all_at(data, at) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        // close() is not a sync.
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().files.remove(&fh);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let mut state = self.state();
        if let Some(file) = state.files.get(&fh)
            && let Err(e) = file.sync_data()
        {
            return reply.error(errno(&e));
        }
        // Durable now: a cut keeps it.
        state.synced.remove(&ino);
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = self.path(ino) else {
            return reply.error(ENOENT);
        };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut all: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let kind = if meta.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            all.push((meta.ino(), kind, entry.file_name()));
        }
        for (i, (ino, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let Some(root) = self.path(fuser::FUSE_ROOT_ID) else {
            return reply.error(ENOENT);
        };
        let c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).expect("a path");
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a statvfs to fill.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return reply.error(EIO);
        }
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        if self.path(ino).is_some_and(|p| p.exists()) {
            reply.ok()
        } else {
            reply.error(ENOENT)
        }
    }
}
