package io.clusterlvm.dlm.engine;

public record LockspaceView(String name, int resources, int granted, int converting, int waiting) {}
