# bayes_perception: `make test` sets up libtorch (once) and runs the whole test suite.
#
# libtorch: `make setup` installs PyTorch 2.11.0 into a venv under $(CACHE_DIR) and the
# build uses its libtorch (LIBTORCH_USE_PYTORCH). With LIBTORCH set (your own libtorch
# 2.11, e.g. on a Jetson) nothing is installed and torch-sys builds against that.

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

.PHONY: setup build release test lint fmt doc demo clean-cache

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build

release: setup
	$(CARGO) build --release

# The ROS node cannot link without a sourced ROS 2; r2r's doc-only feature lets clippy
# compile it (and everything else) here, so the r2r layer is always checked.
ROS_CHECK_FEATURES := ros-doc-only

test: setup
	$(CARGO) test --all-targets
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --features $(ROS_CHECK_FEATURES) -- -D warnings

lint: setup
	$(CARGO) clippy --all-targets --features $(ROS_CHECK_FEATURES) -- -D warnings

fmt:
	$(CARGO) fmt --all

# The bundled demo model on synthetic scenes, in MC mode; prints where the outputs are.
demo: release
	@bash scripts/demo.sh

doc: setup
	$(CARGO) doc --no-deps

clean-cache:
	rm -rf "$(CACHE_DIR)"
