// Package ingest watches a drop directory for FHIR exports and feeds each
// file, once, to a fhir.Sink (the agent's encrypted store).
//
// # The drop directory
//
// Config.Dir is the incoming directory. The Watcher polls it (no inotify,
// so it works on network and container mounts alike) for regular files
// named *.ndjson, *.ndjson.gz or *.json; other names, hidden files (a
// leading dot), symlinks and subdirectories are ignored. Two directories
// are created beside the files:
//
//	Dir/done/                 files ingested, moved here whole
//	Dir/quarantine/           files that could not be read at all, each with <name>.reason
//	Dir/quarantine/records/   single rejected resources: <time>-<sha256 prefix>-<reason>.json
//
// # The rule for integration engines
//
// A file is read only once it is complete. Write it under a name the
// Watcher ignores (a leading dot, or an extension such as .tmp) and rename
// it to its final name when it is fully written: a rename within one file
// system is atomic, so the Watcher never sees half a file. Alternatively,
// write the file in place and, once it is complete, create an empty marker
// "<name>.ready" beside it (for "Observation.ndjson.gz", the marker is
// "Observation.ndjson.gz.ready"); the Watcher then reads it at the next
// poll and removes the marker afterwards. A file with neither is read once
// its size and modification time are unchanged across two consecutive polls
// and it is not empty; this is a fallback for writers that cannot rename,
// and a writer that pauses longer than Config.PollInterval mid-file defeats
// it.
//
// # Order, once-only and restarts
//
// The files that are complete at a poll are processed in name order. After
// a file has been read it is moved (an atomic rename) to done/; when done/
// already holds that name, a number is added before the extension
// ("Observation.1.ndjson.gz"). done/ is never read again, so a restart does
// not re-ingest what is there. If the agent stops between reading a file
// and moving it, the file is read again on restart; that is harmless, since
// the store upserts every record by id and keeps the newest version. A file
// whose records the Sink refuses (the store is closed or full) stays where
// it is and is retried at a later poll.
//
// # Quarantine and PHI
//
// A file that cannot be read at all (a .gz file that is not gzip or whose
// stream is corrupt, an I/O error) is moved to quarantine/ with a
// "<name>.reason" file that gives the reason class and the error; records
// read before the failure have been stored. Inside a readable file, every
// resource the fhir reader rejects (see fhir.Stats.Rejected) is written to
// quarantine/records/ with its reason in its name; the file itself still
// goes to done/. An oversized line is counted but not written (it is never
// held in memory).
//
// Quarantine files are the one place where input bytes are kept outside
// the encrypted store: they hold raw PHI, on the gateway's own disk, under
// the agent's data directory, with mode 0600 in directories of mode 0700.
// They exist so that a person at the hospital can inspect bad input; they
// never leave the site, and nothing reads them back. Files in done/ are
// the hospital's own exports, kept as they were delivered; retention of
// done/ and quarantine/ is the operator's (or a later clean-up job's)
// business. Log lines and errors never name a file: a file is identified by
// a sequence number, its kind and its size (Synthea and many EHR exports
// put patient names in file names).
package ingest
