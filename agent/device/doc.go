// Package device ingests bedside-device telemetry over MQTT into the site
// agent's store.
//
// # Topics
//
// Each device publishes its readings, at QoS 1, to
//
//	cohort/<site>/devices/<device-id>/observations
//
// and the agent subscribes to cohort/<site>/devices/+/observations at QoS 1.
// Site and device ids are 1 to 128 characters from [A-Za-z0-9._:-].
//
// # Payload
//
// One reading per message, a JSON object of at most MaxPayload bytes
// (64 KiB by default):
//
//	{"device_id": "MX450-0042", "patient": "Patient/123",
//	 "time": "2025-03-01T12:00:00Z", "loinc": "8867-4", "value": 72, "unit": "/min"}
//
// The fields:
//
//   - device_id (required) must equal the device id in the topic.
//   - patient (optional) is a patient id, "Patient/<id>", an absolute URL
//     ending in "Patient/<id>", or "urn:uuid:<id>"; ids are FHIR ids
//     ([A-Za-z0-9.-]{1,64}). Without it, the Registry names the patient the
//     device was attached to at the reading's time.
//   - time (required) is RFC 3339, at most MaxFutureSkew ahead of the
//     receiver's clock, in the years 1900 to 9999.
//   - loinc (required) is a LOINC code: 1 to 7 digits, a dash, and the
//     correct mod-10 check digit.
//   - value (required) is a finite JSON number (a string is refused).
//   - unit (required) is a non-empty string of at most 64 bytes.
//
// Any other field, a duplicated field, a null, or a value of the wrong JSON
// type is refused. Decode does the checking; each refusal wraps one
// sentinel error, and Reason names it in a short string ("bad-loinc",
// "future-time", ...) used in Stats and in quarantine files.
//
// # Delivery, acks and back-pressure
//
// The Subscriber uses a persistent session (clean session off, a stable
// client id, paho's in-flight state in an encrypted file store or in
// memory: see below), so the broker keeps the agent's subscription and its
// queued QoS 1 messages while the agent is away, and redelivers every
// message the agent has not acknowledged.
// Acknowledgement is manual: a message is acked only after its reading has
// been durably written (the sink returned nil, and Flush returned nil for a
// sink that buffers). A crash or disconnect before that leaves the message
// unacked, and the broker delivers it again. Observation ids are derived
// from the device id, the reading's time and its LOINC code, so a
// redelivered message overwrites the same record instead of adding one.
//
// The paho message handler never blocks paho's router (order does not
// matter, so paho runs each handler in its own goroutine). It decodes the
// message and hands the reading to a bounded queue that a single writer
// goroutine drains into the sink. When the queue is full the handler waits
// for room in its own goroutine and does not ack, and does not drop. With
// QoS 1 the broker sends a client at most its in-flight window of unacked
// messages (Mosquitto's max_inflight_messages, 20 by default) and queues the
// rest on its side, so a slow store slows delivery from the broker rather
// than growing memory in the agent: the agent holds at most QueueSize
// readings plus one in-flight window of waiting messages. MQTT 3.1.1 has no
// end-to-end flow control: the broker keeps acknowledging publishers while
// it queues for the agent, so the broker's own queue limits
// (max_queued_messages, max_queued_bytes) must cover the longest store stall
// the site can tolerate; beyond them Mosquitto drops messages. The embedded
// broker (mochi-mqtt) applies no in-flight window to MQTT 3.1.1 clients, so
// with it the waiting messages are bounded only by what the publishers send.
//
// A payload that fails to decode, or whose patient cannot be determined,
// will never become valid: it is acked, counted under its reason, and
// quarantined.
//
// # In-flight store
//
// paho keeps every QoS 1 message it has received and not yet acked, and
// its own unacknowledged SUBSCRIBEs, in an mqtt.Store. With Config.StoreDir
// and Config.StoreKey set, that is a SealedStore: one buntdb file,
// StoreDir/StoreFile, in which each packet is encrypted (AES-256-GCM, a
// random nonce, the entry's key and sequence number as associated data)
// before it reaches the disk. paho's own FileStore, which writes each
// packet to a plaintext file, is never used: StoreDir without StoreKey is
// refused, and Run deletes files such a store left in StoreDir. Without
// StoreDir, paho's in-memory store is used; for this subscriber it loses
// nothing (see Config.StoreDir).
//
// The file is synced once a second, not on every Put and Del: the store is
// paho's session bookkeeping, and the broker, not the store, redelivers
// every unacked QoS 1 message of the persistent session after a crash
// (paho discards stored inbound messages when it resumes). Syncing every
// Put and Del would cost about four fifths of the throughput
// (BenchmarkMosquittoEndToEnd, Mosquitto, the real encrypted store as
// sink, on a 2-core VM: about 14,000 readings/s with the SealedStore as
// with the in-memory store, 2,700 with a sync on each, against 22,000 for
// Mosquitto's bare publish-to-subscribe rate), for no reading saved.
//
// # Data on disk and PHI
//
// Payloads carry patient references and measurements: they are PHI. Three
// places hold them on the gateway's own disk, all of which must live inside
// the agent's data directory: the store itself (encrypted), StoreDir (paho's
// in-flight messages until acked, encrypted under StoreKey; optional, see
// Config) and QuarantineDir (rejected payloads, plaintext, kept for an
// operator to inspect). Both directories are created with mode 0700 and
// refused if group or others can access them; the in-flight store and
// quarantine files are written with mode 0600; quarantine files are named
// by receive time and a hash of topic and payload, and hold the reason, the
// topic and the raw payload (see ReadQuarantined). Logs, errors and Stats
// carry counts, reasons, topic patterns, device ids (equipment serials)
// and in-flight store key names (message ids) only, never a patient
// reference or a payload.
package device
