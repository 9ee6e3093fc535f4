namespace GptSharp.Tests;

/// <summary>
/// Optional system packages (Open MPI, Chromium). A test that needs one calls <see cref="SkipUnlessInstalled"/> from a
/// <c>[SkippableFact]</c>: without the package it is reported as skipped, with the apt-get line in the reason, so
/// `dotnet test` passes on a fresh machine and the skip is visible. `.ci/run` installs them, so CI always runs them.
/// </summary>
internal static class SystemTools
{
    public const string MpiInstall = "apt-get install openmpi-bin libopenmpi-dev";
    public const string ChromiumInstall = "apt-get install chromium";

    /// <summary>The full path of <paramref name="command"/> on PATH, or null.</summary>
    public static string? Find(string command)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
        {
            if (dir.Length == 0) continue;
            string candidate = Path.Combine(dir, command);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>Skips the calling test (visibly, with the install command) when <paramref name="command"/> is missing.</summary>
    public static string SkipUnlessInstalled(string command, string installLine)
    {
        string? path = Find(command);
        Skip.If(path is null, $"skipped: '{command}' is not installed; run `{installLine}` to include this test");
        return path!;
    }
}
