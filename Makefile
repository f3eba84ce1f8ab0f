# vmfs — see README.md. `make test` is what CI runs (.ci/run).
GO      ?= go
BUILD   := build
VMFS    := $(BUILD)/vmfs
GUEST   := $(BUILD)/guest
# ./... skips directories named testdata, so the fixture packages are named too.
PKGS    := ./... ./testdata ./testdata/sampledisk ./testdata/composite
# Packages that mount share /dev/fuse and loop devices: one at a time (go-fuse's all.bash).
TESTFLAGS ?= -count=1 -timeout 20m -p 1

.PHONY: all build deps test test-short lint proto testdata guest demo bench fuzz stress clean

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
	@if command -v staticcheck >/dev/null; then staticcheck $(PKGS); else echo "lint: staticcheck not installed, skipped"; fi

proto:
	$(GO) generate ./metadata

testdata:
	$(GO) generate ./testdata

# fuzz runs every fuzz target for FUZZTIME each; found inputs land in testdata/fuzz.
# (make test runs their seed corpora as ordinary tests.)
FUZZTIME ?= 60s
FUZZ := layout:FuzzReader layout:FuzzParseComposite metadata:FuzzParsePayloadConfig \
	metadata:FuzzLoadVMConfig metadata:FuzzDecodeMetadata metadata:FuzzNewIdsig metadata:FuzzParseApexInfoList
fuzz:
	@for t in $(FUZZ); do pkg=$${t%%:*}; fn=$${t#*:}; \
		echo "== $$pkg $$fn"; $(GO) test -run XXX -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; done

# guest builds the test guest (kernel, initramfs with vmfs-guest as /init, microdroid.json)
# into build/guest, usable as --os-dir; a rerun only rebuilds the agent (see the script).
guest:
	GO=$(GO) ./cmd/vmfs-guest/build-guest.sh $(GUEST)

# demo mounts the sample app, shows the mount, boots it from the mount under QEMU
# (the guest prints its checks as one VMFS-VERDICT line) and unmounts.
# PROFILE=android13|android14|android15 boots the Android 13+ sample (two extra APKs) with an
# instance image; android13 puts it on the OS config's disk 1, which the test guest's config
# gets in $(BUILD)/demo-os-android13 (testdata.StateOSDir).
PROFILE ?= android12
DEMO_OS := $(GUEST)
DEMO_INSTANCE := $(BUILD)/demo-instance-$(PROFILE).img
ifeq ($(PROFILE),android12)
DEMO_FLAGS := --apex-info-list testdata/apex-info-list.xml
DEMO_APP   := testdata/app/sample.apk testdata/app/sample.apk.idsig assets/vm_config.json
else
# The instance image is made on the first demo and kept, as vm run-app keeps it.
DEMO_FLAGS := --apex-info-list testdata/later/apex-info-list.xml \
	--extra-idsig testdata/later/extra-0.apk.idsig --extra-idsig testdata/later/extra-1.apk.idsig
ifeq ($(PROFILE),android13)
DEMO_OS  := $(BUILD)/demo-os-android13
DEMO_APP := testdata/later/sample.apk testdata/later/sample.apk.idsig $(DEMO_INSTANCE) assets/vm_config.json
else
DEMO_APP := --config-path assets/vm_config.json testdata/later/sample.apk testdata/later/sample.apk.idsig $(DEMO_INSTANCE)
endif
endif
DEMO_FLAGS += --profile $(PROFILE) --os-dir $(DEMO_OS)
demo: deps build guest
	@if [ "$(PROFILE)" = android13 ]; then $(GO) run ./testdata/stateos $(GUEST) $(DEMO_OS) || exit 1; fi; \
	mnt=$$(mktemp -d /tmp/vmfs-demo.XXXXXX); \
	set -x; $(VMFS) mount $(DEMO_FLAGS) $(DEMO_APP) $$mnt || { rmdir $$mnt; exit 1; }; \
	ls -l $$mnt $$mnt/partitions; $(VMFS) list; \
	$(VMFS) run-app --mount $$mnt --require-verdict --timeout 5m; rc=$$?; \
	$(VMFS) unmount $$mnt; rmdir $$mnt; { set +x; } 2>/dev/null; \
	if [ $$rc -eq 0 ]; then echo "demo: the guest's checks all passed"; else echo "demo: failed ($$rc)"; fi; exit $$rc

# bench measures vmfs against copying the flat image, the seed's files, nbdkit +
# nbdfuse, direct reads and qemu-io (state writes), and writes
# cmd/vmfs-bench/results/latest.{md,png,json}. Root, about 10 minutes, ~9 GB of
# temp space. Driver flags: BENCHFLAGS="-reps 3"; some figures only, kept apart
# from the record: BENCHFLAGS="-only P5,P7 -out /tmp/bench".
bench: build guest
	$(GO) run ./cmd/vmfs-bench -vmfs $(VMFS) -guest $(GUEST) -out cmd/vmfs-bench/results $(BENCHFLAGS)

clean:
	rm -rf $(BUILD)

# stress runs the 16-reader random-read stresses for 60 s each against the oracle:
# 16 readers on one mount, then 16 readers on 16 payloads of one service.
stress:
	VMFS_STRESS_SECONDS=60 $(GO) test -count=1 -run TestStress -v ./fusedisk
	VMFS_STRESS_SECONDS=60 $(GO) test -count=1 -run TestServiceStress -v ./service
