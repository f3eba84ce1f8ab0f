# vmfs — see README.md. `make test` is what CI runs (.ci/run).
GO      ?= go
BUILD   := build
VMFS    := $(BUILD)/vmfs
GUEST   := $(BUILD)/guest
# ./... skips directories named testdata, so the fixture package is named too.
PKGS    := ./... ./testdata
# Packages that mount share /dev/fuse and loop devices: one at a time (go-fuse's all.bash).
TESTFLAGS ?= -count=1 -timeout 20m -p 1

.PHONY: all build deps test test-short lint proto testdata guest demo bench fuzz clean

all: build

build:
	$(GO) build -o $(VMFS) ./cmd/vmfs

# deps installs what the tests use as oracles and engines on a fresh Debian 12.
deps:
	./.ci/deps

test: deps lint guest
	$(GO) test $(TESTFLAGS) $(PKGS)

test-short:
	$(GO) test -short $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

proto:
	$(GO) generate ./metadata

testdata:
	$(GO) generate ./testdata

fuzz:
	$(GO) test -run XXX -fuzz FuzzReader -fuzztime 60s ./layout

# guest builds the test guest (kernel, initramfs with vmfs-guest as /init, microdroid.json)
# into build/guest, usable as --os-dir; a rerun only rebuilds the agent (see the script).
guest:
	GO=$(GO) ./cmd/vmfs-guest/build-guest.sh $(GUEST)

clean:
	rm -rf $(BUILD)
