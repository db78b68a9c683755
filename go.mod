module github.com/lvslab/lvslab

go 1.26.8

require (
	github.com/moby/ipvs v1.1.0
	github.com/sirupsen/logrus v1.9.0
	github.com/vishvananda/netlink v1.3.1
	github.com/vishvananda/netns v0.0.5
	golang.org/x/sys v0.50.0
	gopkg.in/yaml.v3 v3.0.1
)

require github.com/stretchr/testify v1.8.4 // indirect
