namespace GptSharp.Tests;

/// <summary>Where the test fixtures are after the build copies them next to the test assembly.</summary>
internal static class FixturePaths
{
    public static string Root { get; } = Path.Combine(AppContext.BaseDirectory, "Fixtures");

    public static string Get(params string[] parts) => Path.Combine([Root, .. parts]);
}
