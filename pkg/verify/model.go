package verify

// RoundRobin predicts the servers the kernel's rr scheduler picks for n new
// connections. order is the service's real servers as the kernel lists them
// (GetDestinations: reverse order of insertion); servers of weight 0 are skipped.
// ip_vs_rr_schedule starts after its saved position, which is initially the list
// head, so the first connection goes to the first server listed.
func RoundRobin(order []string, weights []int, n int) []string {
	var live []string
	for i, s := range order {
		if weights == nil || weights[i] > 0 {
			live = append(live, s)
		}
	}
	if len(live) == 0 {
		return make([]string, n)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = live[i%len(live)]
	}
	return out
}
