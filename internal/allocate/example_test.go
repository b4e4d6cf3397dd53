package allocate_test

import (
	"context"
	"fmt"

	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/registry"
)

func Example() {
	regions, err := allocate.ParseRegionMap(`
# narrow rules first: the first match wins
10.1.5.0/24=eu-north
10.1.0.0/16=eu-west
`)
	if err != nil {
		panic(err)
	}
	hubs := []allocate.Hub{
		{Name: "hub-eu.example.net", Region: "eu-west", Weight: 1, Enabled: true},
		{Name: "hub-us.example.net", Region: "us-east", Weight: 1, Enabled: true},
	}
	region, _ := regions.LookupRemote("10.1.7.20:49152") // the device's source address
	a := allocate.New(allocate.Options{})
	res, err := a.Allocate(context.Background(), hubs, allocate.Request{
		RegistrationID: "sensor-0042",
		Policy:         registry.AllocationGeoLatency,
		Region:         region,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(region, res.Hub)
	// Output: eu-west hub-eu.example.net
}
