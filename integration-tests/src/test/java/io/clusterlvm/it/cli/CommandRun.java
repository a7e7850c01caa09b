package io.clusterlvm.it.cli;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/** Runs one of bin/'s commands as an operator would: a process of its own, its output kept. */
final class CommandRun {
  static final Path BIN = Path.of("..", "bin").toAbsolutePath().normalize();

  record Result(int exit, String out, String err) {}

  private CommandRun() {}

  /**
   * Runs {@code program} with {@code args}, the environment's DLM_ variables replaced by {@code
   * env}; its output goes to files in {@code tmp}. Fails if it runs longer than a minute.
   */
  static Result run(Path tmp, Path program, Map<String, String> env, String... args)
      throws IOException, InterruptedException {
    List<String> cmd = new ArrayList<>();
    cmd.add(program.toString());
    cmd.addAll(List.of(args));
    ProcessBuilder pb = new ProcessBuilder(cmd);
    pb.environment().keySet().removeIf(k -> k.startsWith("DLM_"));
    pb.environment().putAll(env);
    Path out = Files.createTempFile(tmp, "out", ".txt");
    Path err = Files.createTempFile(tmp, "err", ".txt");
    pb.redirectOutput(out.toFile()).redirectError(err.toFile());
    Process p = pb.start();
    try {
      if (!p.waitFor(60, TimeUnit.SECONDS)) {
        throw new AssertionError(program + " " + String.join(" ", args) + " did not finish");
      }
    } finally {
      p.destroyForcibly();
    }
    return new Result(
        p.exitValue(),
        Files.readString(out, StandardCharsets.UTF_8),
        Files.readString(err, StandardCharsets.UTF_8));
  }
}
