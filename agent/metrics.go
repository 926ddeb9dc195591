package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// serveMetrics serves GET /metrics (Prometheus text exposition format) and
// GET /healthz on addr until ctx ends. Every value comes from the same
// snapshot as status.json; label values are resource types and fixed
// reason codes, never data.
func (a *Agent) serveMetrics(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		writeMetrics(w, a.status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func writeMetrics(w io.Writer, st Status) {
	family := func(name, typ, help string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	labelled := func(name, label string, m map[string]int) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(w, "%s{%s=%q} %d\n", name, label, k, m[k])
		}
	}
	family("cohort_agent_resources_ingested_total", "counter", "FHIR resources ingested, by resource type.")
	labelled("cohort_agent_resources_ingested_total", "type", st.Ingested)
	family("cohort_agent_resources_skipped_total", "counter", "FHIR resources skipped (valid but unused), by type or reason.")
	labelled("cohort_agent_resources_skipped_total", "reason", st.Skipped)
	family("cohort_agent_resources_rejected_total", "counter", "FHIR resources rejected and quarantined, by reason.")
	labelled("cohort_agent_resources_rejected_total", "reason", st.Rejected)
	if d := st.Devices; d != nil {
		family("cohort_agent_device_readings_received_total", "counter", "MQTT messages delivered by the broker.")
		fmt.Fprintf(w, "cohort_agent_device_readings_received_total %d\n", d.Received)
		family("cohort_agent_device_readings_stored_total", "counter", "Device readings stored and acknowledged.")
		fmt.Fprintf(w, "cohort_agent_device_readings_stored_total %d\n", d.Stored)
		family("cohort_agent_device_readings_rejected_total", "counter", "Device payloads rejected and quarantined, by reason.")
		for _, k := range slices.Sorted(maps.Keys(d.Rejected)) {
			fmt.Fprintf(w, "cohort_agent_device_readings_rejected_total{reason=%q} %d\n", k, d.Rejected[k])
		}
		family("cohort_agent_device_queue_depth", "gauge", "Device readings decoded but not yet stored.")
		fmt.Fprintf(w, "cohort_agent_device_queue_depth %d\n", d.Queue)
	}
	for _, c := range []struct {
		name, help string
		v          int64
	}{
		{"cohort_agent_rounds_trained_total", "Training rounds this site trained.", int64(st.RoundsTrained)},
		{"cohort_agent_updates_acked_total", "Updates the coordinator acknowledged.", int64(st.UpdatesAcked)},
		{"cohort_agent_updates_resent_total", "Acknowledged updates sent again after a failover.", int64(st.UpdatesResent)},
		{"cohort_agent_uploads_resumed_total", "Uploads continued from the byte an interrupted one reached.", int64(st.UploadsResumed)},
		{"cohort_agent_downloads_resumed_total", "Model downloads continued from the byte an interrupted one reached.", int64(st.DownloadsResumed)},
		{"cohort_agent_reconnects_total", "Reconnections to the coordinators.", int64(st.Reconnects)},
		{"cohort_agent_bytes_sent_total", "Bytes sent to the coordinators (through the egress guard).", st.BytesSent},
	} {
		family(c.name, "counter", c.help)
		fmt.Fprintf(w, "%s %s\n", c.name, strconv.FormatInt(c.v, 10))
	}
}
