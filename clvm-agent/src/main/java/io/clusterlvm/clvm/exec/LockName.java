package io.clusterlvm.clvm.exec;

import io.clusterlvm.clvm.lvm.LockRequirement;

/** A DLM resource: lockspace and resource name, written "lockspace/resource". */
record LockName(String lockspace, String resource) {

  static LockName of(LockRequirement r) {
    return new LockName(r.lockspace(), r.resource());
  }

  @Override
  public String toString() {
    return lockspace + "/" + resource;
  }
}
