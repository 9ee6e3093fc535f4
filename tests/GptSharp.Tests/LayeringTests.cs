using System.Text.RegularExpressions;

namespace GptSharp.Tests;

/// <summary>
/// The library's folders are concepts stacked in one order, and a folder may import only the folders below it.
/// This reads every <c>using GptSharp.X</c> in the sources, so a new import that points upwards (or sideways
/// within a layer) fails here instead of quietly growing a cycle.
/// </summary>
public sealed partial class LayeringTests
{
    /// <summary>
    /// Bottom to top. Folders on one line share a layer and may not import each other. A subfolder belongs to
    /// its folder (<c>Checkpoints/Gpt2</c> is part of <c>Checkpoints</c>).
    /// </summary>
    internal static readonly string[][] Layers =
    [
        ["IO", "Randomness"],
        ["Tensors"],
        ["Tokenization", "Layers"],
        ["Data"],
        ["Model"],
        ["Formats"],
        ["Pretrained"],
        ["Checkpoints", "Generation"],
        ["Evaluation"],
        ["Training"],
        ["Distributed", "Serving"],
        ["Cli"],
    ];

    [Fact]
    public void EveryLibraryFolderIsInTheLayerTable()
    {
        var library = Path.Combine(RepositoryRoot(), "src", "GptSharp");
        var known = Layers.SelectMany(l => l).ToHashSet();
        var folders = Directory.EnumerateDirectories(library)
            .Select(Path.GetFileName)
            .Where(d => d is not ("bin" or "obj" or "Resources") && Directory.EnumerateFiles(Path.Combine(library, d!), "*.cs", SearchOption.AllDirectories).Any())
            .ToList();
        var missing = folders.Where(f => !known.Contains(f!)).ToList();
        Assert.True(missing.Count == 0, "folders in no layer: " + string.Join(", ", missing));
    }

    [Fact]
    public void NoFolderImportsAFolderAboveOrBesideIt()
    {
        var root = RepositoryRoot();
        var violations = new List<string>();
        foreach (var (file, concept) in SourceFiles(root))
        {
            int own = LayerOf(concept);
            foreach (Match m in UsingLine().Matches(File.ReadAllText(file)))
            {
                string imported = m.Groups[1].Value;
                if (imported == concept) continue;
                int layer = LayerOf(imported);
                Assert.True(layer >= 0, $"{Path.GetRelativePath(root, file)} imports GptSharp.{imported}, which is in no layer");
                if (layer >= own)
                    violations.Add($"{Path.GetRelativePath(root, file)} ({concept}) imports GptSharp.{imported}");
            }
        }
        Assert.True(violations.Count == 0, "imports against the layer order:\n" + string.Join("\n", violations));
    }

    [Fact]
    public void NamespacesFollowFolders()
    {
        var root = RepositoryRoot();
        var library = Path.Combine(root, "src", "GptSharp");
        var wrong = new List<string>();
        foreach (var file in Directory.EnumerateFiles(library, "*.cs", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(library, Path.GetDirectoryName(file)!);
            if (relative.Split(Path.DirectorySeparatorChar)[0] is "bin" or "obj") continue;
            string expected = relative == "." ? "GptSharp" : "GptSharp." + relative.Replace(Path.DirectorySeparatorChar, '.');
            var m = NamespaceLine().Match(File.ReadAllText(file));
            if (!m.Success || m.Groups[1].Value != expected)
                wrong.Add($"{Path.GetRelativePath(root, file)}: namespace {(m.Success ? m.Groups[1].Value : "(none)")}, expected {expected}");
        }
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
    }

    /// <summary>Each library source file with its concept (top folder); the two front ends count as one concept each.</summary>
    private static IEnumerable<(string File, string Concept)> SourceFiles(string root)
    {
        var library = Path.Combine(root, "src", "GptSharp");
        foreach (var file in Directory.EnumerateFiles(library, "*.cs", SearchOption.AllDirectories))
        {
            var top = Path.GetRelativePath(library, file).Split(Path.DirectorySeparatorChar)[0];
            if (top is "bin" or "obj" || top.EndsWith(".cs")) continue;
            yield return (file, top);
        }
        foreach (var (project, concept) in new[] { ("GptSharp.Serving", "Serving"), ("GptSharp.Cli", "Cli") })
            foreach (var file in Directory.EnumerateFiles(Path.Combine(root, "src", project), "*.cs", SearchOption.AllDirectories))
                if (!file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !file.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"))
                    yield return (file, concept);
    }

    private static int LayerOf(string concept) => Array.FindIndex(Layers, l => l.Contains(concept));

    internal static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "GptSharp.slnx"))) return dir.FullName;
        throw new InvalidOperationException("GptSharp.slnx not found above " + AppContext.BaseDirectory);
    }

    /// <summary>The top concept named by a <c>using GptSharp.X[.Y];</c> line (aliases included).</summary>
    [GeneratedRegex(@"^\s*(?:global\s+)?using\s+(?:static\s+)?(?:\w+\s*=\s*)?GptSharp\.(\w+)[\w.]*\s*;", RegexOptions.Multiline)]
    private static partial Regex UsingLine();

    [GeneratedRegex(@"^namespace\s+([\w.]+)\s*;", RegexOptions.Multiline)]
    private static partial Regex NamespaceLine();
}
