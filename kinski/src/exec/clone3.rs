//! clone3 with `CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP`: no libc wraps it, and a child
//! sharing our memory must start on its own stack, so the system call is made here, and the
//! child calls [`super::entry`] from it.

use super::Entry;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::AtomicBool;

/// False once the kernel has refused it.
pub(super) static WORKS: AtomicBool = AtomicBool::new(cfg!(target_arch = "x86_64"));

/// Whether `error` says this kernel has no clone3 or no `CLONE_INTO_CGROUP`.
pub(super) fn unsupported(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL))
}

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The child's first Rust code, on its own stack.
extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the Entry the parent passed, alive while it waits (CLONE_VFORK).
    let entry = unsafe { &*arg.cast::<Entry<'_>>() };
    // SAFETY: the child of a CLONE_VM | CLONE_VFORK clone, every signal blocked.
    unsafe { super::child(entry.prepared, entry.failure) as libc::c_int }
}

/// Starts the child in the cgroup of directory `cgroup`; returns its pid once it has
/// exec'd or exited.
///
/// # Safety
/// Every signal blocked; `stack` unused by anything else until this returns.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn spawn(stack: &mut [u8], cgroup: RawFd, child: &Entry<'_>) -> io::Result<libc::pid_t> {
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: stack.len() as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup as u64,
    };
    let ret: i64;
    // SAFETY: the parent returns from the system call as from any other (rcx and r11
    // clobbered). The child starts at the instruction after it with rax 0 and its stack
    // pointer at the top of `stack` (16-byte aligned), calls entry(child) there, which
    // never returns (it execs or exits), and exits if it did.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") std::ptr::from_ref(child) as *mut libc::c_void,
            in("r13") entry as extern "C" fn(*mut libc::c_void) -> libc::c_int,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    Ok(ret as libc::pid_t)
}

/// Elsewhere: refused, as by an old kernel, so the child moves itself in.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn spawn(_: &mut [u8], _: RawFd, _: &Entry<'_>) -> io::Result<libc::pid_t> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
