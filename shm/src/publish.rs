//! A channel's publish area: where an NF writes the events it publishes
//! (its own memory, since it cannot write the runtime's slot pool), for the
//! worker to copy out.
//!
//! The area is [`PUB_RECORDS`](crate::layout::PUB_RECORDS) records of
//! `slot_size` bytes (an event header and payload, as in a slot) and one
//! counter the worker writes: how many records it has copied out. The NF
//! writes its `n`-th publication into record `n % PUB_RECORDS` and then
//! names it with `Answer::publish(n)` on its answer ring (so it keeps its
//! place among the verdicts); the worker copies record `n` when it pops
//! that answer and only if `n` is the next it expects. A record is free
//! again once the counter passed it.
//!
//! Everything here lives in memory the NF may write: the worker trusts
//! nothing of it but what it copies and then checks.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A view of one channel's publish area.
#[derive(Clone, Copy)]
pub struct PublishArea<'a> {
    cons: &'a AtomicU32,
    words: &'a [AtomicU64],
    records: u32,
    /// Words per record (the record stride, a multiple of 64 bytes).
    stride: usize,
    /// Bytes a record carries (the slot payload size).
    len: usize,
}

impl std::fmt::Debug for PublishArea<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishArea").field("records", &self.records).field("len", &self.len).finish()
    }
}

impl<'a> PublishArea<'a> {
    pub(crate) fn new(cons: &'a AtomicU32, words: &'a [AtomicU64], records: u32, stride: usize, len: usize) -> Self {
        debug_assert!(stride % 8 == 0 && len <= stride && words.len() == records as usize * stride / 8);
        PublishArea { cons, words, records, stride: stride / 8, len }
    }

    /// Bytes one record holds.
    pub fn record_len(&self) -> usize {
        self.len
    }

    /// Records in the area.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// The NF's handle; the area must be fresh (the runtime gives each
    /// registration new channel memory).
    pub fn writer(&self) -> PubWriter<'a> {
        PubWriter { area: *self, next: self.cons.load(Ordering::Acquire) }
    }

    /// The worker's handle, expecting record 0 next (fresh memory).
    pub fn reader(&self) -> PubReader<'a> {
        self.reader_at(0)
    }

    /// A reader expecting record `next` (one that [`PubReader::next`] of an
    /// earlier reader of this area returned).
    pub fn reader_at(&self, next: u32) -> PubReader<'a> {
        PubReader { area: *self, next }
    }

    fn record(&self, n: u32) -> &'a [AtomicU64] {
        let at = (n % self.records) as usize * self.stride;
        &self.words[at..at + self.stride]
    }
}

/// The NF's end: writes records in order.
#[derive(Debug)]
pub struct PubWriter<'a> {
    area: PublishArea<'a>,
    next: u32,
}

impl PubWriter<'_> {
    /// Writes `bytes` (zero-padded to the record length) into the next
    /// record and returns its number, to name in `Answer::publish`; `None`
    /// when every record still waits for the worker or `bytes` is too long.
    /// The record counts as used only after [`commit`](Self::commit).
    pub fn write(&mut self, bytes: &[u8]) -> Option<u32> {
        if bytes.len() > self.area.len {
            return None;
        }
        // Acquire pairs with the worker's Release store: its copy of the
        // record we overwrite happened before.
        let copied = self.area.cons.load(Ordering::Acquire);
        if self.next.wrapping_sub(copied) >= self.area.records {
            return None;
        }
        let rec = self.area.record(self.next);
        let words = self.area.len.div_ceil(8);
        for (i, w) in rec[..words].iter().enumerate() {
            let mut b = [0u8; 8];
            let from = (i * 8).min(bytes.len());
            let to = (i * 8 + 8).min(bytes.len());
            b[..to - from].copy_from_slice(&bytes[from..to]);
            // Relaxed: the Release push of the answer that names the record
            // publishes it.
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        Some(self.next)
    }

    /// The record [`write`](Self::write) returned was named on the answer
    /// ring: move on.
    pub fn commit(&mut self) {
        self.next = self.next.wrapping_add(1);
    }
}

/// The worker's end: copies records out in order.
#[derive(Debug)]
pub struct PubReader<'a> {
    area: PublishArea<'a>,
    next: u32,
}

impl PubReader<'_> {
    /// The record expected next.
    pub fn next(&self) -> u32 {
        self.next
    }

    /// Copies record `n` into `out` (up to the record length) if `n` is the
    /// record expected next, frees it for the NF and returns how many bytes
    /// were copied; `None` for any other `n` (a confused or hostile NF),
    /// which changes nothing. Call after the answer naming `n` was popped
    /// (its Acquire makes the record's contents visible).
    pub fn take(&mut self, n: u32, out: &mut [u8]) -> Option<usize> {
        if n != self.next {
            return None;
        }
        let rec = self.area.record(n);
        let len = self.area.len.min(out.len());
        for (i, chunk) in out[..len].chunks_mut(8).enumerate() {
            let b = rec[i].load(Ordering::Relaxed).to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.next = self.next.wrapping_add(1);
        // Release: our reads of the record happen-before the NF's Acquire
        // load that lets it overwrite it.
        self.area.cons.store(self.next, Ordering::Release);
        Some(len)
    }
}
