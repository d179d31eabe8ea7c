//! The receive buffers of one io_uring: a ring of entries through which the kernel picks them
//! and the program gives them back. The io_uring runtime's (`uring.rs`), and included by path
//! in im-bench's bare relay (`crates/im-bench/examples/uring_relay.rs`), which measures the
//! same design without the runtime around it.

use std::io;
use std::sync::atomic::Ordering;

use io_uring::{types, IoUring};

/// Receive buffers the kernel picks from (buffer group 0 of one ring), and the ring of entries
/// through which they go back to it: a store to shared memory per buffer, where
/// `PROVIDE_BUFFERS` took a submission each.
pub(crate) struct BufferPool {
    entries: *mut types::BufRingEntry,
    /// How many buffers (a power of two, so that the wrapping tail indexes them evenly).
    count: u16,
    tail: u16,
    buffers: Box<[u8]>,
}

impl BufferPool {
    /// What one receive into a buffer of the pool returns at most.
    pub(crate) const BUFFER_SIZE: usize = 8 * 1024;

    /// `count` buffers, all given to `ring` as group 0 (the kernel takes powers of two).
    ///
    /// # Safety
    /// `ring` must be dropped before the pool: until then the kernel writes into the buffers
    /// and reads the entries.
    pub(crate) unsafe fn register(ring: &IoUring, count: u16) -> io::Result<BufferPool> {
        let size = count as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping (page-aligned and zeroed, as the kernel needs),
        // checked before use and unmapped on drop.
        let entries = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if entries == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut pool = BufferPool {
            entries: entries.cast(),
            count,
            tail: 0,
            buffers: vec![0; count as usize * Self::BUFFER_SIZE].into_boxed_slice(),
        };
        // SAFETY: the mapping lives as long as the pool, which outlives the ring.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, 0, 0)
        }?;
        (0..count).for_each(|id| pool.give_back(id));
        Ok(pool)
    }

    /// Bytes `range` of buffer `id`, as a completion filled them; panics past the buffer.
    pub(crate) fn filled(&self, id: u16, range: std::ops::Range<usize>) -> &[u8] {
        &self.buffers[id as usize * Self::BUFFER_SIZE..][..Self::BUFFER_SIZE][range]
    }

    /// Hands buffer `id` back to the kernel, once its bytes are taken; panics past the pool.
    pub(crate) fn give_back(&mut self, id: u16) {
        let address = self.buffers[id as usize * Self::BUFFER_SIZE..][..Self::BUFFER_SIZE]
            .as_mut_ptr() as u64;
        // SAFETY: `tail % count` indexes the mapping; the kernel reads an entry only once the
        // tail, stored after it with release ordering, has passed it.
        unsafe {
            let entry = &mut *self.entries.add((self.tail % self.count) as usize);
            entry.set_addr(address);
            entry.set_len(Self::BUFFER_SIZE as u32);
            entry.set_bid(id);
            let shared = types::BufRingEntry::tail(self.entries) as *mut u16;
            std::sync::atomic::AtomicU16::from_ptr(shared)
                .store(self.tail.wrapping_add(1), Ordering::Release);
        }
        self.tail = self.tail.wrapping_add(1);
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        let size = self.count as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: the mapping made in `register`, no longer read: the ring was dropped before.
        unsafe { libc::munmap(self.entries.cast(), size) };
    }
}
