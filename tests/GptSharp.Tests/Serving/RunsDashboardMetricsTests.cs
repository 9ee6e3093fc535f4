using GptSharp.Serving;

namespace GptSharp.Tests.Serving;

/// <summary>metrics.csv as the dashboard reads it: the header's columns, and a benchmark's empty cells as gaps.</summary>
public class RunsDashboardMetricsTests
{
    [Fact]
    public void BenchmarkColumnsAreNamedAndTheirEmptyCellsAreNaN()
    {
        const string csv = "step,epoch,tokens_seen,train_loss,val_loss,lr,tokens_per_s,hellaswag_acc,hellaswag_acc_norm\n" +
                           "0,1,512,9.9,9.95,0.0004,1000.0,0.25,0.5\n5,1,3072,7.7,7.9,0.0004,1200.0,,\n10,2,5";
        Assert.Equal(["step", "epoch", "tokens_seen", "train_loss", "val_loss", "lr", "tokens_per_s", "hellaswag_acc", "hellaswag_acc_norm"], RunsDashboard.MetricsColumns(csv));
        var rows = RunsDashboard.ParseMetrics(csv);
        Assert.Equal(2, rows.Count); // the last line is still being written
        Assert.Equal(0.5, rows[0][8]);
        Assert.True(double.IsNaN(rows[1][7]) && double.IsNaN(rows[1][8]));
        Assert.Equal(7.9, rows[1][4]);
        // A loss cell is never empty: such a row is damaged and skipped.
        Assert.Empty(RunsDashboard.ParseMetrics("step,epoch,tokens_seen,train_loss,val_loss\n0,1,512,,9.9\n"));
        Assert.Empty(RunsDashboard.MetricsColumns("step,epo"));
    }
}
