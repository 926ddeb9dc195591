package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator/web/webtest"
)

// TestDashboardInBrowser runs a job of three rounds on a real node, then
// drives Debian's chromium through the dashboard served by the node's
// admin listener: log in with a token, open the job, find one point per
// committed round on its chart, and save a screenshot ($COHORT_ARTIFACTS).
func TestDashboardInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	const rounds = 3
	tc := startCluster(t, 1, []string{"st-a"}, []JobSpec{testJob("j-chart", rounds, 1)})
	leader, _ := tc.leader(t)
	a := tc.welcomed(t, leader, "st-a")
	for r := 1; r <= rounds; r++ {
		offer := a.task(t, 10*time.Second)
		if offer.GetRound() != uint64(r) {
			t.Fatalf("offer %v, want round %d", offer, r)
		}
		download(t, a, offer)
		body := []float32{0.1, 0.1, 0.1, 0.1}
		hdr := uploadHeader(offer, body, 10)
		hdr.Metrics.ValAuroc = 0.6 + 0.05*float64(r)
		if resp := uploadRaw(t, a, hdr, encodeF32(body)); resp.GetAck() == nil {
			t.Fatalf("round %d upload: %v", r, resp)
		}
		waitFor(t, leader, fmt.Sprintf("round %d committed", r), func() bool {
			j, _ := leader.Job("j-chart")
			return j.CommittedRounds() >= uint64(r)
		})
	}
	webtest.RunLoginAndJobChart(t, "https://"+leader.AdminAddr(), tc.token, "j-chart", rounds, "")
}
