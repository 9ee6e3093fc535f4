using System.CommandLine;
using System.Reflection;
using System.Text.RegularExpressions;
using GptSharp.Cli;

namespace GptSharp.Tests;

/// <summary>
/// The library names its own properties in its messages and the CLI maps them to flags in one table (<see cref="CliFlags"/>):
/// no library string names a flag, every name in the table is a real member, and every flag is a real option.
/// </summary>
public sealed partial class CliFlagsTests
{
    [Fact]
    public void NoLibraryStringNamesACommandLineFlag()
    {
        var library = Path.Combine(LayeringTests.RepositoryRoot(), "src", "GptSharp");
        var found = new List<string>();
        foreach (var file in Directory.EnumerateFiles(library, "*.cs", SearchOption.AllDirectories))
        {
            if (file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}")) continue;
            int number = 0;
            foreach (var line in File.ReadLines(file))
            {
                number++;
                if (line.TrimStart().StartsWith("//", StringComparison.Ordinal)) continue;
                // A flag inside a string literal: "... --max-steps ..." (the bundled corpus' dashes are prose, not in code).
                if (FlagInString().IsMatch(line)) found.Add($"{Path.GetRelativePath(library, file)}:{number}: {line.Trim()}");
            }
        }
        Assert.True(found.Count == 0, "library strings that name CLI flags:\n" + string.Join("\n", found));
    }

    [Fact]
    public void EveryNameInTheTableIsAMemberAndEveryFlagAnOption()
    {
        var library = typeof(GptSharp.Model.GptModel).Assembly;
        foreach (var (name, flag) in CliFlags.Table)
        {
            var m = QualifiedName().Match(name);
            if (m.Success)
            {
                var type = library.GetTypes().SingleOrDefault(t => t.Name == m.Groups[1].Value);
                Assert.True(type is not null, $"{name}: no type {m.Groups[1].Value} in GptSharp");
                Assert.True(type!.GetMember(m.Groups[2].Value, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static).Length > 0,
                    $"{name}: {type.Name} has no member {m.Groups[2].Value}");
            }
            Assert.Contains(flag.Split(' ')[0], AllOptions());
        }
        Assert.Equal("--epochs must be positive, got 0.", CliFlags.Map("TrainingOptions.Epochs must be positive, got 0."));
        Assert.Equal("--eval-task-every needs --eval-task NAME:FILE.", CliFlags.Map("TrainingOptions.EvalTaskEvery needs TrainingOptions.EvalTask NAME:FILE."));
        Assert.Equal("the 64 KiB limit must hold", CliFlags.Map("the 64 KiB limit must hold")); // a plain word stays a word
    }

    private static HashSet<string> AllOptions()
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        void Walk(Command c)
        {
            foreach (var o in c.Options)
            {
                names.Add(o.Name);
                foreach (var a in o.Aliases) names.Add(a);
            }
            foreach (var sub in c.Subcommands) Walk(sub);
        }
        Walk(Program.BuildRootCommand());
        return names;
    }

    [GeneratedRegex(@"""[^""]*(?<![\w-])--[a-z][a-z0-9]*(-[a-z0-9]+)*\b")]
    private static partial Regex FlagInString();

    [GeneratedRegex(@"^(\w+)\.(\w+)$")]
    private static partial Regex QualifiedName();
}
