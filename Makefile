# bayes_perception: `make test` sets up libtorch and ROS 2 (once) and runs the whole test
# suite, the end-to-end tests of the running ROS 2 node included.
#
# libtorch: `make setup` installs PyTorch 2.11.0 into a venv under $(CACHE_DIR) and the
# build uses its libtorch (LIBTORCH_USE_PYTORCH). With LIBTORCH set (your own libtorch
# 2.11, e.g. on a Jetson) nothing is installed and torch-sys builds against that.
#
# ROS 2: a sourced ROS 2 (`source /opt/ros/jazzy/setup.bash`) is used as it is; without
# one, `make ros-setup` installs the ROS 2 Jazzy core from the Python package index into
# $(CACHE_DIR)/ros. scripts/ros-env.sh sets either up for building and running the node.

SHELL := /bin/bash
CACHE_DIR ?= $(or $(BAYES_PERCEPTION_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/bayes_perception)
export BAYES_PERCEPTION_CACHE := $(CACHE_DIR)
VENV := $(CACHE_DIR)/venv
# The Python with rosbags / mcap that the bag tests use as independent readers and writers.
export BAYES_PERCEPTION_PYTHON := $(VENV)/bin/python

ifeq ($(strip $(LIBTORCH)),)
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)
endif

CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

# Runs the rest of a recipe line with ROS 2 set up (scripts/ros-env.sh) and the torch
# venv's python first on PATH again, which torch-sys's build asks for libtorch.
WITH_ROS := source scripts/ros-env.sh && export PATH="$(VENV)/bin:$$PATH" &&

# Test builds: the node, plus fail points (FAILPOINTS) for the fault-injection tests.
TEST_FEATURES := ros,failpoints

# The end-to-end tests start these (debug builds, shared with `cargo test`).
# (Paths quoted in recipes: the cache or target directory may hold spaces.)
E2E_ENV := BAYES_PERCEPTION_BIN="$(TARGET_DIR)/debug/bayes_perception" \
	BAYES_PERCEPTION_NODE="$(TARGET_DIR)/debug/bayes_perception_node"

.PHONY: setup ros-setup build release node test test-node test-fleet colcon-check lint fmt doc demo report soak kill-writer fuzz audit clean-cache

setup:
	@bash scripts/setup.sh

ros-setup:
	@if [[ -n "$${ROS_DISTRO:-}" && -n "$${AMENT_PREFIX_PATH:-}" && "$${AMENT_PREFIX_PATH}" != "$(CACHE_DIR)/ros" ]]; then \
		echo "ros-setup: using the sourced ROS 2 $${ROS_DISTRO}; nothing to install"; \
	else \
		bash scripts/ros-setup.sh; \
	fi

build: setup
	$(CARGO) build

release: setup
	$(CARGO) build --release

# The ROS 2 node, release build: $(TARGET_DIR)/release/bayes_perception_node.
node: setup ros-setup
	$(WITH_ROS) $(CARGO) build --release --features ros --bin bayes_perception_node
	@echo "built $(TARGET_DIR)/release/bayes_perception_node; run it in a shell that sourced scripts/ros-env.sh"

# Unit and integration tests (the node is built against ROS 2 with them), the end-to-end
# tests of the running node, the Ray fleet driver's tests (local Ray), the benchmark
# summary's tests, formatting, clippy on everything including the node, and the API docs
# (cargo doc) without a warning.
test: setup ros-setup
	$(WITH_ROS) $(CARGO) test --all-targets --features $(TEST_FEATURES)
	$(WITH_ROS) $(E2E_ENV) "$$BAYES_ROS_PYTHON" -m pytest tests/ros
	$(E2E_ENV) "$(VENV)/bin/python" -m pytest tests/fleet
	"$(VENV)/bin/python" -m pytest tests/scripts
	$(CARGO) fmt --all -- --check
	$(WITH_ROS) $(CARGO) clippy --all-targets --features $(TEST_FEATURES) -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

# Only the end-to-end tests of the running node (builds what they start).
test-node: setup ros-setup
	$(WITH_ROS) $(CARGO) build --features $(TEST_FEATURES) --bins
	$(WITH_ROS) $(E2E_ENV) "$$BAYES_ROS_PYTHON" -m pytest tests/ros

# Only the tests of the Ray fleet driver (scripts/fleet.py) on a local Ray cluster.
test-fleet: setup ros-setup
	$(WITH_ROS) $(CARGO) build --features $(TEST_FEATURES) --bins
	$(E2E_ENV) "$(VENV)/bin/python" -m pytest tests/fleet

# `colcon build` of this package in a workspace in the cache, then the installed node,
# started from its installed params file, probed end to end (run by CI).
colcon-check: setup ros-setup
	@if [[ -z "$${ROS_DISTRO:-}" || "$${AMENT_PREFIX_PATH:-}" == "$(CACHE_DIR)/ros" ]]; then \
		bash scripts/ros-setup.sh colcon; \
	fi
	$(WITH_ROS) bash scripts/colcon-check.sh

lint: setup ros-setup
	$(WITH_ROS) $(CARGO) clippy --all-targets --features $(TEST_FEATURES) -- -D warnings

fmt:
	$(CARGO) fmt --all

# The bundled demo model on synthetic scenes, in MC mode; prints where the outputs are.
demo: release
	@bash scripts/demo.sh

doc: setup
	$(CARGO) doc --no-deps

clean-cache:
	rm -rf "$(CACHE_DIR)"

# The uncertainty-quality report (docs/uncertainty-quality.md) from the bundled models:
# the paper's comparison with every chart, into reports/uncertainty/.
report: build
	BAYES_PERCEPTION_BIN="$(TARGET_DIR)/debug/bayes_perception" bash scripts/report.sh

# Reliability checks too long for `make test` (RELIABILITY.md has their results).
# soak: 10 000 frames through the running node and through `bag process`, RSS sampled
# (results and, with matplotlib, plots in reliability/). kill-writer: `bag process` killed with
# SIGKILL at 20 random points, then a full disk. fuzz: every fuzz target for FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
soak: setup ros-setup
	$(WITH_ROS) $(CARGO) build --release --features ros --bins
	$(WITH_ROS) BAYES_PERCEPTION_BIN="$(TARGET_DIR)/release/bayes_perception" \
		BAYES_PERCEPTION_NODE="$(TARGET_DIR)/release/bayes_perception_node" "$$BAYES_ROS_PYTHON" scripts/soak.py node
	$(WITH_ROS) BAYES_PERCEPTION_BIN="$(TARGET_DIR)/release/bayes_perception" "$$BAYES_ROS_PYTHON" scripts/soak.py bag

kill-writer: release
	BAYES_PERCEPTION_BIN="$(TARGET_DIR)/release/bayes_perception" "$(VENV)/bin/python" scripts/kill_writer.py

fuzz: setup
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

# cargo-deny (installed once into the cache): licenses, bans and sources always; RustSec
# advisories when the advisory database (a GitHub repository) can be fetched, else it says
# that they were not checked. CI runs it.
CARGO_DENY := $(CACHE_DIR)/tools/bin/cargo-deny
audit:
	@[[ -x "$(CARGO_DENY)" ]] || $(CARGO) install cargo-deny --version 0.20.2 --locked --root "$(CACHE_DIR)/tools"
	"$(CARGO_DENY)" check licenses bans sources
	@dbs="$${CARGO_HOME:-$$HOME/.cargo}/advisory-dbs"; \
	timeout 120 "$(CARGO_DENY)" fetch db >/dev/null 2>&1 || true; \
	db=$$(ls -d "$$dbs"/advisory-db-* 2>/dev/null | head -1); \
	if [[ -n "$$db" ]]; then \
		echo "audit: RustSec advisories, database as of $$(git -C "$$db" log -1 --format=%cs)"; \
		"$(CARGO_DENY)" --offline check advisories; \
	else \
		echo "audit: RustSec advisories NOT checked: the advisory database (github.com/rustsec/advisory-db) cannot be fetched from here"; \
	fi
